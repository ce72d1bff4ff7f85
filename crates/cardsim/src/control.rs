//! Control of a running simulator by another process, over a Unix socket.
//!
//! With [`crate::SimConfig::control_socket`] set, the simulator listens on that path. A
//! client writes one command per line and reads one answer line per command; the answer
//! starts with `ok` or `error`:
//!
//! | command      | effect                                                         |
//! | ------------ | -------------------------------------------------------------- |
//! | `status`     | `ok uid=<14 hex> counter=<n> inserted=<bool> connected=<bool> tear=<none\|next\|XX\|after:N> connections=<n> tears=<n> last_torn=<none\|XX>` |
//! | `tear`       | the next command APDU is processed, then the connection drops  |
//! | `tear-on XX` | the same at the next command with INS `XX` (hex), e.g. `B0`     |
//! | `tear-after N` | the same at the N-th command APDU from now (N ≥ 1; `tear-after 1` is `tear`) |
//! | `tear-cancel` | no tear waits any more                                          |
//! | `remove`     | the card leaves the field (disconnects from vpcd)              |
//! | `insert`     | the card enters the field (connects to vpcd)                   |
//! | `shutdown`   | the simulator stops; [`crate::run`] returns                    |
//!
//! From a shell: `printf 'tear-on B0\n' | socat - UNIX-CONNECT:/tmp/kartu-sim.sock`
//! (or `nc -U`). From Rust: [`send_command`].

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::shared::{Shared, SimError, TearTrigger};

/// Longest command line accepted, in bytes.
pub const CONTROL_LINE_MAX: usize = 128;

/// Most commands served on one connection.
pub const CONTROL_COMMANDS_PER_CONNECTION_MAX: usize = 64;

/// How often the control socket looks for a new client.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How long a control client may take to send a line.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct ControlServer {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub(crate) fn start(path: PathBuf, shared: Arc<Shared>) -> Result<Self, SimError> {
        let control_error = |source| SimError::Control { path: path.clone(), source };
        // A socket left behind by a previous run is replaced; any other file is not.
        if let Ok(metadata) = fs::symlink_metadata(&path) {
            if metadata.file_type().is_socket() {
                fs::remove_file(&path).map_err(control_error)?;
            }
        }
        let listener = UnixListener::bind(&path).map_err(control_error)?;
        // Non-blocking accept, polled: stopping never depends on the socket file still
        // being there to connect to.
        listener.set_nonblocking(true).map_err(control_error)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread_stopping = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("cardsim-control".to_string())
            .spawn(move || {
                while !thread_stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Err(error) = serve_client(&shared, client) {
                                tracing::debug!(%error, "control client failed");
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                        Err(error) => {
                            tracing::warn!(%error, "control socket accept failed");
                            std::thread::sleep(ACCEPT_POLL);
                        }
                    }
                }
            })
            .map_err(|error| SimError::Thread(error.to_string()))?;
        Ok(Self { path, stopping, thread: Some(thread) })
    }

    pub(crate) fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

fn serve_client(shared: &Shared, client: UnixStream) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    client.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client);
    for _ in 0..CONTROL_COMMANDS_PER_CONNECTION_MAX {
        let mut line = String::new();
        let read = (&mut reader).take(CONTROL_LINE_MAX as u64 + 1).read_line(&mut line)?;
        if read == 0 {
            return Ok(());
        }
        let answer = if line.len() > CONTROL_LINE_MAX {
            "error line too long".to_string()
        } else {
            execute(shared, line.trim())
        };
        writer.write_all(answer.as_bytes())?;
        writer.write_all(b"\n")?;
        if line.len() > CONTROL_LINE_MAX {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs one control command and returns the answer line (without the newline).
pub(crate) fn execute(shared: &Shared, command: &str) -> String {
    let mut words = command.split_ascii_whitespace();
    let answer = match (words.next(), words.next(), words.next()) {
        (Some("status"), None, None) => {
            let status = shared.status();
            let tear = match status.tear {
                None => "none".to_string(),
                Some(TearTrigger::NextCommand) => "next".to_string(),
                Some(TearTrigger::Instruction(ins)) => format!("{ins:02X}"),
                Some(TearTrigger::AfterCommands(n)) => format!("after:{n}"),
            };
            let last_torn = status.last_torn.map_or_else(|| "none".to_string(), |ins| format!("{ins:02X}"));
            return format!(
                "ok uid={} counter={} inserted={} connected={} tear={tear} connections={} tears={} last_torn={last_torn}",
                status.uid,
                status.sdm_read_counter,
                status.inserted,
                status.connected,
                status.connections,
                status.tears
            );
        }
        (Some("tear"), None, None) => {
            shared.set_tear(TearTrigger::NextCommand);
            Ok(())
        }
        (Some("tear-on"), Some(ins), None) => match u8::from_str_radix(ins, 16) {
            Ok(ins) => {
                shared.set_tear(TearTrigger::Instruction(ins));
                Ok(())
            }
            Err(_) => Err("INS must be one hex byte"),
        },
        (Some("tear-after"), Some(n), None) => match n.parse::<u32>() {
            Ok(n) if n >= 1 => {
                shared.set_tear(TearTrigger::AfterCommands(n));
                Ok(())
            }
            _ => Err("N must be a number of commands from 1"),
        },
        (Some("tear-cancel"), None, None) => {
            shared.update(|control| control.tear = None);
            Ok(())
        }
        (Some("remove"), None, None) => {
            shared.remove();
            Ok(())
        }
        (Some("insert"), None, None) => {
            shared.insert();
            Ok(())
        }
        (Some("shutdown"), None, None) => {
            shared.request_shutdown();
            Ok(())
        }
        _ => Err("unknown command (status, tear, tear-on XX, tear-after N, tear-cancel, remove, insert, shutdown)"),
    };
    match answer {
        Ok(()) => "ok".to_string(),
        Err(reason) => format!("error {reason}"),
    }
}

/// Sends one command to the simulator listening on `socket` and returns what follows
/// `ok` in its answer.
///
/// # Errors
/// [`SimError::Control`] when the socket cannot be used, [`SimError::ControlRefused`]
/// when the simulator answers `error`.
pub fn send_command(socket: &Path, command: &str) -> Result<String, SimError> {
    let control_error = |source| SimError::Control { path: socket.to_path_buf(), source };
    let mut stream = UnixStream::connect(socket).map_err(control_error)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(control_error)?;
    stream.write_all(command.as_bytes()).map_err(control_error)?;
    stream.write_all(b"\n").map_err(control_error)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(control_error)?;
    let mut answer = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut answer).map_err(control_error)?;
    let answer = answer.trim_end();
    match answer.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim_start().to_string()),
        None => Err(SimError::ControlRefused(answer.to_string())),
    }
}
