//! The vpcd protocol against a stand-in for vpcd (a TCP listener speaking the same framing),
//! and control through the Rust handle and the Unix socket.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cardsim::vpcd::{read_message, write_message, VPCD_CTRL_ATR, VPCD_CTRL_ON, VPCD_CTRL_RESET};
use cardsim::{send_command, SimConfig, ATR};

const TIMEOUT: Duration = Duration::from_secs(5);

struct FakeVpcd {
    listener: TcpListener,
}

impl FakeVpcd {
    fn new() -> Self {
        Self { listener: TcpListener::bind("127.0.0.1:0").expect("bind") }
    }

    fn address(&self) -> String {
        self.listener.local_addr().expect("address").to_string()
    }

    /// Waits for the card to connect (the listener is blocking; the card retries).
    fn accept(&self) -> TcpStream {
        let (stream, _) = self.listener.accept().expect("accept");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream
    }
}

/// A simulator for `vpcd` with a short minimum absence (no pcscd polls here).
fn config(vpcd: &FakeVpcd, directory: &std::path::Path) -> SimConfig {
    let mut config = SimConfig::new(vpcd.address(), directory.join("card.json"));
    config.min_absence = Duration::from_millis(20);
    config
}

fn exchange(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    write_message(stream, message)?;
    read_message(stream)
}

#[test]
fn power_atr_apdus_tear_and_reinsertion() {
    let directory = tempfile::tempdir().expect("tempdir");
    let vpcd = FakeVpcd::new();
    let sim = cardsim::spawn(config(&vpcd, directory.path())).expect("spawn");
    let mut stream = vpcd.accept();
    assert!(sim.wait_connected(TIMEOUT));

    write_message(&mut stream, &[VPCD_CTRL_ON]).expect("power on");
    write_message(&mut stream, &[VPCD_CTRL_RESET]).expect("reset");
    assert_eq!(exchange(&mut stream, &[VPCD_CTRL_ATR]).expect("atr"), ATR);
    let select = [0x00, 0xA4, 0x04, 0x0C, 0x07, 0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01, 0x00];
    assert_eq!(exchange(&mut stream, &select).expect("select"), [0x90, 0x00]);
    let uid = exchange(&mut stream, &[0xFF, 0xCA, 0x00, 0x00, 0x00]).expect("uid");
    assert_eq!(&uid[..7], sim.uid().as_bytes());

    // A tear at ReadBinary: SELECT FILE still answers, ReadBinary does not.
    sim.tear_on_instruction(0xB0);
    let select_file = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0xE1, 0x04];
    assert_eq!(exchange(&mut stream, &select_file).expect("select file"), [0x90, 0x00]);
    assert!(exchange(&mut stream, &[0x00, 0xB0, 0x00, 0x00, 0x00]).is_err(), "no answer after a tear");
    assert!(sim.wait_disconnected(TIMEOUT));
    let status = sim.status();
    assert!(!status.inserted && status.tears == 1 && status.tear.is_none());

    // Back in the field: a new connection, the card works again.
    sim.insert();
    let mut stream = vpcd.accept();
    assert_eq!(exchange(&mut stream, &[VPCD_CTRL_ATR]).expect("atr"), ATR);
    assert_eq!(exchange(&mut stream, &select).expect("select"), [0x90, 0x00]);

    // Removal closes the connection.
    sim.remove();
    assert!(exchange(&mut stream, &[VPCD_CTRL_ATR]).is_err());
    assert!(sim.wait_disconnected(TIMEOUT));
    sim.shutdown().expect("shutdown");
}

#[test]
fn control_socket_drives_the_simulator() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("sim.sock");
    let vpcd = FakeVpcd::new();
    let mut config = config(&vpcd, directory.path());
    config.control_socket = Some(socket.clone());
    config.uid = Some(card::CardUid::from_hex("04A1A2A3A4A5A6").expect("uid"));
    let sim = cardsim::spawn(config).expect("spawn");
    let mut stream = vpcd.accept();

    let status = send_command(&socket, "status").expect("status");
    assert!(status.starts_with("uid=04A1A2A3A4A5A6 counter=0 inserted=true"), "{status}");
    assert!(send_command(&socket, "bogus").is_err());
    assert!(send_command(&socket, "tear-on XYZ").is_err());
    send_command(&socket, "tear").expect("tear");
    assert!(send_command(&socket, "status").expect("status").contains("tear=next"));
    assert!(exchange(&mut stream, &[0x90, 0x60, 0x00, 0x00, 0x00]).is_err());
    assert!(sim.wait_disconnected(TIMEOUT));
    send_command(&socket, "insert").expect("insert");
    let mut stream = vpcd.accept();
    assert_eq!(exchange(&mut stream, &[VPCD_CTRL_ATR]).expect("atr"), ATR);
    send_command(&socket, "remove").expect("remove");
    assert!(sim.wait_disconnected(TIMEOUT));
    send_command(&socket, "shutdown").expect("shutdown");
    sim.shutdown().expect("join");
    assert!(!socket.exists(), "the socket file is removed");
}

/// `tear-after N` counts command APDUs (not vpcd's control codes): the first N - 1 are
/// answered, the N-th is processed and not answered; the status shows what remains.
#[test]
fn tear_after_counts_commands() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("sim.sock");
    let vpcd = FakeVpcd::new();
    let mut config = config(&vpcd, directory.path());
    config.control_socket = Some(socket.clone());
    let sim = cardsim::spawn(config).expect("spawn");
    let mut stream = vpcd.accept();
    assert!(send_command(&socket, "tear-after 0").is_err());
    assert!(send_command(&socket, "tear-after x").is_err());
    send_command(&socket, "tear-after 3").expect("tear-after");
    assert!(send_command(&socket, "status").expect("status").contains("tear=after:3"));
    send_command(&socket, "tear-cancel").expect("tear-cancel");
    assert!(send_command(&socket, "status").expect("status").contains("tear=none"));
    send_command(&socket, "tear-after 3").expect("tear-after");
    let select = [0x00, 0xA4, 0x04, 0x0C, 0x07, 0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01, 0x00];
    assert_eq!(exchange(&mut stream, &[VPCD_CTRL_ATR]).expect("atr"), ATR, "control codes do not count");
    assert_eq!(exchange(&mut stream, &select).expect("1st"), [0x90, 0x00]);
    assert!(send_command(&socket, "status").expect("status").contains("tear=after:2"));
    let version = [0x90, 0x64, 0x00, 0x00, 0x01, 0x00, 0x00];
    assert_eq!(exchange(&mut stream, &version).expect("2nd").len(), 3, "GetKeyVersion answers");
    assert!(exchange(&mut stream, &select).is_err(), "the 3rd command is torn");
    assert!(sim.wait_disconnected(TIMEOUT));
    let status = sim.status();
    assert!(!status.inserted && status.tears == 1 && status.tear.is_none(), "{status:?}");
    assert_eq!(status.last_torn, Some(0xA4), "the torn command's INS");
    assert!(send_command(&socket, "status").expect("status").ends_with("last_torn=A4"));
    // The handle does the same.
    sim.insert();
    let mut stream = vpcd.accept();
    sim.tear_after_commands(1);
    assert!(exchange(&mut stream, &select).is_err(), "tear_after_commands(1) tears the next command");
    assert!(sim.wait_disconnected(TIMEOUT));
    assert_eq!(sim.status().tears, 2);
    sim.shutdown().expect("shutdown");
}

#[test]
fn run_returns_after_shutdown_through_the_socket() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("sim.sock");
    // Nobody listens on this port: the card keeps retrying until it is told to stop.
    let unused = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = unused.local_addr().expect("address").to_string();
    drop(unused);
    let mut config = SimConfig::new(address, directory.path().join("card.json"));
    config.control_socket = Some(socket.clone());
    let runner = std::thread::spawn(move || cardsim::run(config));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while send_command(&socket, "shutdown").is_err() {
        assert!(std::time::Instant::now() < deadline, "control socket never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
    runner.join().expect("thread").expect("run");
}

#[test]
fn an_unresolvable_address_is_refused() {
    let directory = tempfile::tempdir().expect("tempdir");
    let error = cardsim::spawn(SimConfig::new("no port here", directory.path().join("card.json")));
    assert!(matches!(error, Err(cardsim::SimError::Address { .. })));
}
