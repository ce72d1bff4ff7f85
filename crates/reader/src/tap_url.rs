//! Kartu's tap URL, `https://<host>/t?picc_data=<32 hex>&cmac=<16 hex>`, as the card's
//! NDEF file holds it: parsed into a [`TapUrl`], or refused with a [`TapParseError`]. Pure:
//! no card, no reader.

use card::ndef::read_uri;
use card::{SunError, SunTap};

/// The URL scheme of Kartu's tap URL.
pub const TAP_URL_SCHEME: &str = "https://";

/// The path of Kartu's tap URL.
pub const TAP_PATH: &str = "/t";

/// The query parameter holding PICCData.
pub const PICC_DATA_PARAMETER: &str = "picc_data";

/// The query parameter holding the SDMMAC.
pub const CMAC_PARAMETER: &str = "cmac";

/// Longest host accepted in a tap URL (DNS limit).
pub const HOST_MAX: usize = 253;

/// Why the NDEF file or its URL is not a Kartu tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TapParseError {
    /// The file does not hold one short NDEF URI record.
    #[error("the NDEF file does not hold one URI record")]
    NotUriRecord,
    /// The URL does not start with `https://`.
    #[error("the URL is not https")]
    NotHttps,
    /// The host is empty, too long or holds characters a host cannot have.
    #[error("the URL's host is not valid")]
    InvalidHost,
    /// The path is not `/t` with a query.
    #[error("the URL's path is not /t?…")]
    WrongPath,
    /// A query parameter is missing.
    #[error("the URL has no {0} parameter")]
    MissingParameter(&'static str),
    /// A query parameter appears twice.
    #[error("the URL has the {0} parameter twice")]
    DuplicateParameter(&'static str),
    /// The query holds a parameter other than `picc_data` and `cmac`.
    #[error("the URL has an unexpected query parameter")]
    UnexpectedParameter,
    /// `picc_data` or `cmac` is not hex of the right length.
    #[error(transparent)]
    Sun(#[from] SunError),
}

/// A tap read from a card: the URL in its NDEF file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapUrl {
    url: String,
    host: String,
    tap: SunTap,
}

impl TapUrl {
    /// The whole URL, e.g. `https://kartu.example/t?picc_data=…&cmac=…`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host the card sends the citizen's phone to.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// PICCData and SDMMAC in binary, ready for [`card::verify_sun`].
    #[must_use]
    pub const fn tap(&self) -> &SunTap {
        &self.tap
    }

    /// PICCData as 32 upper-case hex characters (the API's `picc_data`).
    #[must_use]
    pub fn picc_data_hex(&self) -> String {
        hex_upper(self.tap.picc_data())
    }

    /// The SDMMAC as 16 upper-case hex characters (the API's `cmac`).
    #[must_use]
    pub fn cmac_hex(&self) -> String {
        hex_upper(self.tap.sdm_mac())
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// Parses NDEF file content (NLEN first) holding Kartu's tap URL.
///
/// # Errors
/// [`TapParseError`] for anything else.
pub fn parse_ndef_file(file: &[u8]) -> Result<TapUrl, TapParseError> {
    let url = read_uri(file).ok_or(TapParseError::NotUriRecord)?;
    parse_tap_url(&url)
}

/// Parses `https://<host>/t?picc_data=<32 hex>&cmac=<16 hex>` (parameters in any order).
///
/// # Errors
/// [`TapParseError`] for anything else.
pub fn parse_tap_url(url: &str) -> Result<TapUrl, TapParseError> {
    let rest = url.strip_prefix(TAP_URL_SCHEME).ok_or(TapParseError::NotHttps)?;
    let (host, path_and_query) = rest.find('/').map_or((rest, ""), |index| rest.split_at(index));
    let host_char = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':');
    if host.is_empty() || host.len() > HOST_MAX || !host.bytes().all(host_char) {
        return Err(TapParseError::InvalidHost);
    }
    let query = path_and_query
        .strip_prefix(TAP_PATH)
        .and_then(|rest| rest.strip_prefix('?'))
        .ok_or(TapParseError::WrongPath)?;
    let (mut picc_data, mut cmac) = (None, None);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or(TapParseError::UnexpectedParameter)?;
        let (slot, name) = match name {
            PICC_DATA_PARAMETER => (&mut picc_data, PICC_DATA_PARAMETER),
            CMAC_PARAMETER => (&mut cmac, CMAC_PARAMETER),
            _ => return Err(TapParseError::UnexpectedParameter),
        };
        if slot.replace(value).is_some() {
            return Err(TapParseError::DuplicateParameter(name));
        }
    }
    let picc_data = picc_data.ok_or(TapParseError::MissingParameter(PICC_DATA_PARAMETER))?;
    let cmac = cmac.ok_or(TapParseError::MissingParameter(CMAC_PARAMETER))?;
    let tap = SunTap::from_hex(picc_data, cmac, None)?;
    Ok(TapUrl { url: url.to_string(), host: host.to_string(), tap })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PICC: &str = "EF963FF7828658A599F3041510671E88";
    const MAC: &str = "94EED9EE65337086";

    fn check(url: &str, expected: Result<&str, TapParseError>) {
        let parsed = parse_tap_url(url).map(|tap| tap.host().to_string());
        assert_eq!(parsed.as_deref().map_err(|error| *error), expected, "{url}");
    }

    #[test]
    fn parses_kartu_urls_and_refuses_the_rest() {
        check(&format!("https://kartu.example/t?picc_data={PICC}&cmac={MAC}"), Ok("kartu.example"));
        check(&format!("https://kartu.example:8443/t?cmac={MAC}&picc_data={PICC}"), Ok("kartu.example:8443"));
        check(&format!("http://kartu.example/t?picc_data={PICC}&cmac={MAC}"), Err(TapParseError::NotHttps));
        check(&format!("https:///t?picc_data={PICC}&cmac={MAC}"), Err(TapParseError::InvalidHost));
        check(&format!("https://a b/t?picc_data={PICC}&cmac={MAC}"), Err(TapParseError::InvalidHost));
        check(&format!("https://k.example/x?picc_data={PICC}&cmac={MAC}"), Err(TapParseError::WrongPath));
        check("https://k.example/t", Err(TapParseError::WrongPath));
        check(&format!("https://k.example/t?picc_data={PICC}"), Err(TapParseError::MissingParameter("cmac")));
        check(
            &format!("https://k.example/t?picc_data={PICC}&picc_data={PICC}&cmac={MAC}"),
            Err(TapParseError::DuplicateParameter("picc_data")),
        );
        check(&format!("https://k.example/t?picc_data={PICC}&cmac={MAC}&x=1"), Err(TapParseError::UnexpectedParameter));
        assert!(matches!(
            parse_tap_url(&format!("https://k.example/t?picc_data={PICC}&cmac=00")),
            Err(TapParseError::Sun(SunError::HexLength { .. }))
        ));
    }

    #[test]
    fn agrees_with_the_card_crate_template() {
        assert_eq!(card::ndef::KARTU_PATH_AND_QUERY, format!("{TAP_PATH}?{PICC_DATA_PARAMETER}="));
        assert_eq!(card::ndef::KARTU_MAC_PARAMETER, format!("&{CMAC_PARAMETER}="));
    }

    #[test]
    fn parses_the_file_the_card_crate_writes() {
        let file = card::ndef::kartu_tap_url_file("kartu.example").expect("file");
        let tap = parse_ndef_file(file.bytes()).expect("tap");
        assert_eq!(tap.picc_data_hex(), "0".repeat(32));
        assert_eq!(tap.cmac_hex(), "0".repeat(16));
        assert_eq!(parse_ndef_file(&[0x00, 0x03, 0xD0, 0x00, 0x00]), Err(TapParseError::NotUriRecord));
    }
}
