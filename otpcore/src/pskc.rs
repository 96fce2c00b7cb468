//! Seed files of hardware tokens: PSKC documents (RFC 6030) read into
//! tokens to be loaded by serial number. Parsing and decryption only; the
//! store loads what parsed, all or nothing.
//!
//! # What is read
//! Each `KeyPackage` is one token and holds exactly one `Key`:
//! - `DeviceInfo/SerialNo`: required, 1 to 64 of `A-Z a-z 0-9 . _ - :`,
//!   and unique within the file. `Manufacturer` and `Model` are kept if
//!   present, with hidden characters escaped and at most 128 characters.
//! - The `Key` `Algorithm`: HOTP (`urn:ietf:params:xml:ns:keyprov:pskc:hotp`)
//!   or TOTP (`urn:ietf:params:xml:ns:keyprov:pskc:totp`).
//! - `AlgorithmParameters/ResponseFormat`: `Length` 6 to 8 is required;
//!   `Encoding`, if given, must be `DECIMAL`, and `CheckDigits` must not be
//!   true. `Suite`, if given, names the hash: `SHA1`, `SHA256` or `SHA512`
//!   (`HMAC-SHA256`, `SHA-256` and any case mean the same); absent: SHA1.
//! - `Data/Secret`: base64 in `PlainValue`, or an `EncryptedValue` (below).
//!   16 to 128 bytes: HOTP requires a shared secret of at least 128 bits;
//!   shorter ones are refused even though authenticator apps accept 80.
//! - HOTP: `Data/Counter`, the counter of the token's next code (absent: 0).
//! - TOTP: `Data/TimeInterval`, the period, 15 to 300 seconds (absent: the
//!   TOTP default of 30); `Data/Time`, where steps are counted from, must be
//!   0 (the Unix epoch) or absent: a token counting from another origin is
//!   refused, not supported; `Data/TimeDrift`, steps the token's clock runs
//!   ahead (negative: behind), absent: 0.
//! - Integers are decimal in `PlainValue`, or big-endian bytes when
//!   encrypted.
//!
//! # Encryption
//! Values may be encrypted with a pre-shared AES-128 key in CBC mode
//! (`http://www.w3.org/2001/04/xmlenc#aes128-cbc`, the IV before the
//! ciphertext). Every encrypted value must carry a `ValueMAC`: HMAC-SHA1
//! (`MACMethod` `http://www.w3.org/2000/09/xmldsig#hmac-sha1`) over the IV
//! and ciphertext, checked before decrypting. The MAC key is the
//! `MACMethod/MACKey`, itself encrypted with the pre-shared key, or, in the
//! older form without `MACKey`, the pre-shared key itself. A MAC that does
//! not match, or a padding error, is [`PskcError::WrongKey`] and nothing of
//! the file is returned.
//!
//! # Refused, with an error naming the token or the file
//! Keys derived from a password (PBKDF2) or encrypted to an asymmetric key
//! (a certificate, RSA); other encryption or MAC algorithms; algorithms
//! other than HOTP and TOTP (PIN, OCRA and other challenge-response keys);
//! a key whose usage excludes OTP, or whose PIN is typed with the code;
//! keys without a secret of their own (derived from a master key).
//!
//! # Untrusted input
//! At most [`MAX_DOCUMENT_BYTES`] of UTF-8; a document type declaration is
//! refused, so no entity beyond XML's five predefined ones can be declared
//! or fetched; at most [`MAX_XML_NODES`] nodes. Error messages quote only
//! identifiers: serial numbers, the key name and algorithm URIs, escaped
//! and shortened; never a value, the pre-shared key or a secret. Secrets
//! and decrypted values are held in zeroizing buffers.

use std::collections::HashMap;
use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use roxmltree::{Document, Node, ParsingOptions};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::config::PERIOD;
use crate::totp::Algorithm;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// The largest document read: about 8,000 encrypted tokens.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
/// The most XML nodes (elements, attributes' owners, text runs) read.
pub const MAX_XML_NODES: u32 = 1_000_000;
/// Secret lengths accepted, in bytes.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=128;

const PSKC: &str = "urn:ietf:params:xml:ns:keyprov:pskc";
const XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XENC11: &str = "http://www.w3.org/2009/xmlenc11#";
const HOTP: &str = "urn:ietf:params:xml:ns:keyprov:pskc:hotp";
const TOTP: &str = "urn:ietf:params:xml:ns:keyprov:pskc:totp";
const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const HMAC_SHA1: [&str; 2] = [
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha1",
];
/// Seconds per step when a TOTP key gives no `TimeInterval`.
const DEFAULT_PERIOD: u64 = 30;
const AES_BLOCK: usize = 16;

/// How a token's codes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Event-based: `counter` is the counter of the token's next code;
    /// codes of earlier counters count as used (for [`crate::hotp`], the
    /// last used counter is [`crate::hotp::last_used_before`]`(counter)`).
    Hotp { counter: u64 },
    /// Time-based, steps of `period` seconds counted from the Unix epoch;
    /// the token's clock runs `drift` steps ahead (negative: behind).
    Totp { period: u64, drift: i64 },
}

/// One token of a seed file.
pub struct Token {
    pub serial: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub kind: Kind,
    pub algorithm: Algorithm,
    /// 6 to 8.
    pub digits: u32,
    pub secret: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("serial", &self.serial)
            .field("manufacturer", &self.manufacturer)
            .field("model", &self.model)
            .field("kind", &self.kind)
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The AES-128 key a seed file's values are encrypted with.
pub struct PreSharedKey(Zeroizing<[u8; 16]>);

impl PreSharedKey {
    /// Reads the key as 32 hexadecimal digits (either case), surrounding
    /// white space ignored.
    pub fn from_hex(text: &str) -> Result<Self, PskcError> {
        let refusal =
            || PskcError::File("the pre-shared key must be 32 hexadecimal digits (AES-128)".into());
        let bytes = Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.trim().as_bytes())
                .map_err(|_| refusal())?,
        );
        let mut key = Zeroizing::new([0u8; 16]);
        if bytes.len() != key.len() {
            return Err(refusal());
        }
        key.copy_from_slice(&bytes);
        Ok(PreSharedKey(key))
    }
}

impl fmt::Debug for PreSharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreSharedKey(<redacted>)")
    }
}

/// Why a seed file, or a token in it, cannot be loaded. Never holds a
/// value of the file, the pre-shared key or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskcError {
    /// The document as a whole cannot be read.
    #[error("{0}")]
    File(String),
    /// Values are encrypted and no pre-shared key was given.
    #[error("the secrets are encrypted with a pre-shared key{}, and none was given", key_name.as_ref().map(|n| format!(" (named \"{n}\")")).unwrap_or_default())]
    KeyNeeded { key_name: Option<String> },
    /// A MAC did not match or a value did not decrypt.
    #[error("wrong pre-shared key or damaged file")]
    WrongKey,
    /// One token cannot be loaded; `token` is `serial N` or, without a
    /// usable serial number, `key package N` (counted from 1).
    #[error("{token}: {message}")]
    Key { token: String, message: String },
}

/// Reads the tokens of a PSKC document, decrypting with `psk` where values
/// are encrypted. Every token must be usable: otherwise all the reasons,
/// one per token, or the one reason the whole file is refused.
pub fn parse(document: &[u8], psk: Option<&PreSharedKey>) -> Result<Vec<Token>, Vec<PskcError>> {
    let file = |message: &str| vec![PskcError::File(message.to_owned())];
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(vec![PskcError::File(format!(
            "the file is larger than {} MiB",
            MAX_DOCUMENT_BYTES / (1024 * 1024)
        ))]);
    }
    let text = std::str::from_utf8(document).map_err(|_| file("the file is not UTF-8 text"))?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| vec![xml_error(&e)])?;
    let root = doc.root_element();
    if !is(root, PSKC, "KeyContainer") {
        return Err(file(
            "not a PSKC document: the root element must be KeyContainer in namespace \
             urn:ietf:params:xml:ns:keyprov:pskc",
        ));
    }
    if root
        .attribute("Version")
        .is_some_and(|v| !matches!(v.trim(), "1" | "1.0"))
    {
        return Err(file("only version 1.0 of PSKC is supported"));
    }
    let keys = Keys::read(root, psk).map_err(|e| vec![e])?;
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, package) in elements(root, PSKC, "KeyPackage").enumerate() {
        let serial = serial(package);
        let label = match &serial {
            Ok(s) => format!("serial {s}"),
            Err(_) => format!("key package {}", index + 1),
        };
        let token_error = |message: String| PskcError::Key {
            token: label.clone(),
            message,
        };
        if let Ok(s) = &serial {
            if let Some(first) = seen.insert(s.clone(), index) {
                errors.push(token_error(format!(
                    "also in key package {}: serial numbers must be unique in a file",
                    first + 1
                )));
            }
        }
        match serial.and_then(|s| read_token(package, s, &keys)) {
            Ok(token) => tokens.push(token),
            Err(Failure::Token(message)) => errors.push(token_error(message)),
            Err(Failure::File(e)) => return Err(vec![e]),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if tokens.is_empty() {
        return Err(file("the file holds no KeyPackage"));
    }
    Ok(tokens)
}

/// Why one token failed: its own problem, or one that refuses the file.
enum Failure {
    Token(String),
    File(PskcError),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Token(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Token(message.to_owned())
    }
}

fn xml_error(error: &roxmltree::Error) -> PskcError {
    use roxmltree::Error;
    // Only the position: roxmltree's own messages may quote the document.
    PskcError::File(match error {
        Error::DtdDetected => {
            "the file has a document type declaration (<!DOCTYPE>), which PSKC files do not \
             use: refused"
                .into()
        }
        Error::NodesLimitReached
        | Error::AttributesLimitReached
        | Error::NamespacesLimitReached => "the file has too many XML nodes".into(),
        other => {
            let at = other.pos();
            format!("not well-formed XML (line {}, column {})", at.row, at.col)
        }
    })
}

fn is(node: Node<'_, '_>, namespace: &str, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(namespace)
}

fn elements<'a, 'i: 'a>(
    parent: Node<'a, 'i>,
    namespace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    parent.children().filter(move |n| is(*n, namespace, name))
}

/// The child element `name`, if any; more than one is an error.
fn child<'a, 'i: 'a>(
    parent: Node<'a, 'i>,
    namespace: &'a str,
    name: &'a str,
) -> Result<Option<Node<'a, 'i>>, String> {
    let mut found = elements(parent, namespace, name);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!(
            "more than one {name} in {}",
            parent.tag_name().name()
        ));
    }
    Ok(first)
}

/// The element's own text, trimmed.
fn text(node: Node<'_, '_>) -> Zeroizing<String> {
    let joined: Zeroizing<String> = Zeroizing::new(
        node.children()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect(),
    );
    Zeroizing::new(joined.trim().to_owned())
}

/// `text` quoted for a message: escaped and shortened.
fn quoted(text: &str) -> String {
    format!("\"{}\"", otpproto::logtext::escape(text, 100))
}

fn base64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>> =
        Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    data_encoding::BASE64
        .decode(&compact)
        .ok()
        .map(Zeroizing::new)
}

/// The serial number of a key package, checked.
fn serial(package: Node<'_, '_>) -> Result<String, Failure> {
    let info = child(package, PSKC, "DeviceInfo")?;
    let node = match info {
        Some(info) => child(info, PSKC, "SerialNo")?,
        None => None,
    };
    let node = node.ok_or("no DeviceInfo SerialNo: tokens are loaded by serial number")?;
    let serial = text(node);
    let valid = (1..=64).contains(&serial.len())
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c));
    if !valid {
        return Err("its SerialNo must be 1 to 64 of A-Z a-z 0-9 . _ - :".into());
    }
    Ok(serial.to_string())
}

/// Free text of DeviceInfo, fit to show.
fn device_text(info: Option<Node<'_, '_>>, name: &str) -> Result<Option<String>, String> {
    let Some(info) = info else { return Ok(None) };
    Ok(child(info, PSKC, name)?
        .map(text)
        .filter(|t| !t.is_empty())
        .map(|t| otpproto::logtext::escape(&t, 128)))
}

fn read_token(package: Node<'_, '_>, serial: String, keys: &Keys) -> Result<Token, Failure> {
    let info = child(package, PSKC, "DeviceInfo")?;
    let manufacturer = device_text(info, "Manufacturer")?;
    let model = device_text(info, "Model")?;
    let mut found = elements(package, PSKC, "Key");
    let key = found.next().ok_or("the key package holds no Key")?;
    if found.next().is_some() {
        return Err("the key package holds more than one Key: one per token is supported".into());
    }
    let uri = key.attribute("Algorithm").unwrap_or("").trim();
    let event_based = match uri {
        HOTP => true,
        TOTP => false,
        "" => return Err("its Key has no Algorithm".into()),
        other => {
            return Err(format!(
                "algorithm {} is not supported: only HOTP and TOTP are",
                quoted(other)
            )
            .into())
        }
    };
    let parameters = child(key, PSKC, "AlgorithmParameters")?;
    let (algorithm, digits) = read_parameters(parameters)?;
    check_policy(child(key, PSKC, "Policy")?)?;
    let data = child(key, PSKC, "Data")?;
    let field = |name: &'static str| -> Result<Option<Node<'_, '_>>, Failure> {
        Ok(match data {
            Some(data) => child(data, PSKC, name)?,
            None => None,
        })
    };
    let secret = field("Secret")?.ok_or(
        "no Secret: keys derived from a master key, or only referenced, are not supported",
    )?;
    let secret = keys.secret(secret)?;
    if !SECRET_BYTES.contains(&secret.len()) {
        return Err(format!(
            "its secret has {} bytes: {} to {} are accepted",
            secret.len(),
            SECRET_BYTES.start(),
            SECRET_BYTES.end()
        )
        .into());
    }
    let kind = if event_based {
        Kind::Hotp {
            counter: keys.unsigned(field("Counter")?, "Counter")?.unwrap_or(0),
        }
    } else {
        let origin = keys.unsigned(field("Time")?, "Time")?.unwrap_or(0);
        if origin != 0 {
            return Err(format!(
                "its Time is {origin}: only 0 is supported (time steps counted from the Unix epoch)"
            )
            .into());
        }
        let period = keys
            .unsigned(field("TimeInterval")?, "TimeInterval")?
            .unwrap_or(DEFAULT_PERIOD);
        if !(PERIOD.min..=PERIOD.max).contains(&period) {
            return Err(format!(
                "its TimeInterval is {period} seconds: {} to {} are supported",
                PERIOD.min, PERIOD.max
            )
            .into());
        }
        let drift = keys.signed(field("TimeDrift")?, "TimeDrift")?.unwrap_or(0);
        Kind::Totp { period, drift }
    };
    Ok(Token {
        serial,
        manufacturer,
        model,
        kind,
        algorithm,
        digits,
        secret,
    })
}

/// The hash and the code length from `AlgorithmParameters`.
fn read_parameters(parameters: Option<Node<'_, '_>>) -> Result<(Algorithm, u32), Failure> {
    let missing = "no ResponseFormat Length: the code length is not known";
    let parameters = parameters.ok_or(missing)?;
    if child(parameters, PSKC, "ChallengeFormat")?.is_some() {
        return Err("challenge-response keys (ChallengeFormat) are not supported".into());
    }
    let algorithm = match child(parameters, PSKC, "Suite")? {
        None => Algorithm::Sha1,
        Some(suite) => {
            let name: String = text(suite)
                .to_ascii_uppercase()
                .trim_start_matches("HMAC-")
                .chars()
                .filter(|c| *c != '-')
                .collect();
            Algorithm::parse(&name)
                .ok_or("its Suite names a hash other than SHA1, SHA256 or SHA512")?
        }
    };
    let format = child(parameters, PSKC, "ResponseFormat")?.ok_or(missing)?;
    if format
        .attribute("Encoding")
        .is_some_and(|e| e.trim() != "DECIMAL")
    {
        return Err(
            "its ResponseFormat Encoding is not DECIMAL: only decimal codes are supported".into(),
        );
    }
    if format
        .attribute("CheckDigits")
        .is_some_and(|c| matches!(c.trim(), "true" | "1"))
    {
        return Err("codes with a check digit (CheckDigits) are not supported".into());
    }
    let digits = format
        .attribute("Length")
        .ok_or(missing)?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|d| (6..=8).contains(d))
        .ok_or("its ResponseFormat Length must be 6, 7 or 8")?;
    Ok((algorithm, digits))
}

/// Refuses keys the product cannot use as they are meant: not for OTP, or
/// with a PIN typed along with the code.
fn check_policy(policy: Option<Node<'_, '_>>) -> Result<(), Failure> {
    let Some(policy) = policy else { return Ok(()) };
    let mut usages = elements(policy, PSKC, "KeyUsage").peekable();
    if usages.peek().is_some() && !usages.any(|u| text(u).as_str() == "OTP") {
        return Err("its KeyUsage does not include OTP".into());
    }
    if let Some(pin) = child(policy, PSKC, "PINPolicy")? {
        if pin
            .attribute("PINUsageMode")
            .is_some_and(|m| m.trim() != "Local")
        {
            return Err(
                "a PIN checked by the server (PINUsageMode other than Local) is not supported"
                    .into(),
            );
        }
    }
    Ok(())
}

/// How the file's encrypted values are opened: the pre-shared key and the
/// MAC key, if a key was given.
struct Keys {
    /// The name the file gives its key, for the message when none is given.
    key_name: Option<String>,
    open: Option<Opener>,
}

struct Opener {
    psk: Zeroizing<[u8; 16]>,
    /// `None`: the file has no MACMethod.
    mac_key: Option<Zeroizing<Vec<u8>>>,
}

impl Keys {
    fn read(root: Node<'_, '_>, psk: Option<&PreSharedKey>) -> Result<Keys, PskcError> {
        let file = |m: &str| PskcError::File(m.to_owned());
        let in_file = |e: String| PskcError::File(e);
        let mut key_name = None;
        if let Some(key) = child(root, PSKC, "EncryptionKey").map_err(in_file)? {
            for item in key.children().filter(Node::is_element) {
                if is(item, DS, "KeyName") {
                    let name = text(item);
                    if key_name.is_none() && !name.is_empty() {
                        key_name = Some(otpproto::logtext::escape(&name, 64));
                    }
                } else if is(item, XENC11, "DerivedKey") {
                    return Err(file(
                        "the file's key is derived from a password (PBKDF2), which is not \
                         supported: ask for the file encrypted with a pre-shared AES-128 key, \
                         or unencrypted",
                    ));
                } else {
                    return Err(file(
                        "the file is encrypted to an asymmetric key (a certificate or public \
                         key), which is not supported: ask for the file encrypted with a \
                         pre-shared AES-128 key, or unencrypted",
                    ));
                }
            }
        }
        let Some(psk) = psk else {
            return Ok(Keys {
                key_name,
                open: None,
            });
        };
        let psk = Zeroizing::new(*psk.0);
        let mac_key = match child(root, PSKC, "MACMethod").map_err(in_file)? {
            None => None,
            Some(method) => {
                // The MAC key's encryption first: a file encrypted some other
                // way is refused for that.
                let encrypted_key = child(method, PSKC, "MACKey")
                    .and_then(|k| k.map(cipher_value).transpose())
                    .map_err(in_file)?;
                let uri = method.attribute("Algorithm").unwrap_or("").trim();
                if !HMAC_SHA1.contains(&uri) {
                    let named = if uri.is_empty() {
                        "without an Algorithm".to_owned()
                    } else {
                        quoted(uri)
                    };
                    return Err(PskcError::File(format!(
                        "MACMethod {named} is not supported: only HMAC-SHA1 is"
                    )));
                }
                Some(match encrypted_key {
                    Some(cipher) => decrypt(&psk, &cipher)
                        .filter(|k| !k.is_empty())
                        .ok_or(PskcError::WrongKey)?,
                    None => Zeroizing::new(psk.to_vec()),
                })
            }
        };
        Ok(Keys {
            key_name,
            open: Some(Opener { psk, mac_key }),
        })
    }

    /// The plain text of a data element's `PlainValue`, or its
    /// `EncryptedValue` checked and decrypted.
    fn value(&self, element: Node<'_, '_>) -> Result<Value, Failure> {
        let name = element.tag_name().name();
        let plain = child(element, PSKC, "PlainValue")?;
        let encrypted = child(element, PSKC, "EncryptedValue")?;
        let encrypted = match (plain, encrypted) {
            (Some(plain), None) => return Ok(Value::Plain(text(plain))),
            (None, Some(encrypted)) => encrypted,
            (Some(_), Some(_)) => {
                return Err(format!("its {name} has both PlainValue and EncryptedValue").into())
            }
            (None, None) => {
                return Err(format!("its {name} has no PlainValue or EncryptedValue").into())
            }
        };
        let cipher = cipher_value(encrypted)?;
        let Some(open) = &self.open else {
            return Err(Failure::File(PskcError::KeyNeeded {
                key_name: self.key_name.clone(),
            }));
        };
        let Some(mac_key) = &open.mac_key else {
            return Err(Failure::File(PskcError::File(
                "the file has encrypted values but no MACMethod, so a wrong key or a damaged \
                 file cannot be told apart: refused"
                    .into(),
            )));
        };
        let mac = child(element, PSKC, "ValueMAC")?
            .and_then(|m| base64(&text(m)))
            .ok_or_else(|| format!("its encrypted {name} has no base64 ValueMAC"))?;
        let mut check = Hmac::<Sha1>::new_from_slice(mac_key)
            .map_err(|_| Failure::File(PskcError::WrongKey))?;
        check.update(&cipher);
        check
            .verify_slice(&mac)
            .map_err(|_| Failure::File(PskcError::WrongKey))?;
        decrypt(&open.psk, &cipher)
            .map(Value::Decrypted)
            .ok_or(Failure::File(PskcError::WrongKey))
    }

    fn secret(&self, element: Node<'_, '_>) -> Result<Zeroizing<Vec<u8>>, Failure> {
        match self.value(element)? {
            Value::Plain(text) => Ok(base64(&text).ok_or("its Secret PlainValue is not base64")?),
            Value::Decrypted(bytes) => Ok(bytes),
        }
    }

    /// An integer data element as `u64`, if present.
    fn unsigned(&self, element: Option<Node<'_, '_>>, name: &str) -> Result<Option<u64>, Failure> {
        self.integer(element, name, |text| text.parse::<u64>().ok(), Some)
    }

    /// An integer data element as `i64`, if present.
    fn signed(&self, element: Option<Node<'_, '_>>, name: &str) -> Result<Option<i64>, Failure> {
        self.integer(
            element,
            name,
            |text| text.parse::<i64>().ok(),
            |v| i64::try_from(v).ok(),
        )
    }

    fn integer<T>(
        &self,
        element: Option<Node<'_, '_>>,
        name: &str,
        from_text: impl Fn(&str) -> Option<T>,
        from_u64: impl Fn(u64) -> Option<T>,
    ) -> Result<Option<T>, Failure> {
        let Some(element) = element else {
            return Ok(None);
        };
        let value = match self.value(element)? {
            Value::Plain(text) => from_text(&text),
            Value::Decrypted(bytes) if bytes.len() <= 8 => {
                from_u64(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
            }
            Value::Decrypted(_) => None,
        };
        value
            .map(Some)
            .ok_or_else(|| format!("its {name} is not an integer in range").into())
    }
}

/// A data element's value as the file holds it.
enum Value {
    Plain(Zeroizing<String>),
    Decrypted(Zeroizing<Vec<u8>>),
}

/// The IV and ciphertext of an `EncryptedValue` or `MACKey`, after its
/// algorithm is checked.
fn cipher_value(encrypted: Node<'_, '_>) -> Result<Zeroizing<Vec<u8>>, String> {
    let uri = child(encrypted, XENC, "EncryptionMethod")?
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or("")
        .trim();
    if uri.contains("rsa") {
        return Err(format!(
            "encryption to an asymmetric key ({}) is not supported: only AES-128-CBC with a \
             pre-shared key is",
            quoted(uri)
        ));
    }
    if uri != AES128_CBC {
        return Err(format!(
            "encryption algorithm {} is not supported: only AES-128-CBC with a pre-shared key is",
            quoted(uri)
        ));
    }
    child(encrypted, XENC, "CipherData")?
        .map(|data| child(data, XENC, "CipherValue"))
        .transpose()?
        .flatten()
        .and_then(|value| base64(&text(value)))
        .ok_or_else(|| "an encrypted value has no base64 CipherData/CipherValue".to_owned())
}

/// AES-128-CBC with PKCS#7 padding; `cipher` is the IV, then the
/// ciphertext. `None` if the length or the padding is wrong.
fn decrypt(key: &[u8; 16], cipher: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if cipher.len() < 2 * AES_BLOCK || !cipher.len().is_multiple_of(AES_BLOCK) {
        return None;
    }
    let (iv, body) = cipher.split_at(AES_BLOCK);
    let mut buffer = Zeroizing::new(body.to_vec());
    let decryptor = cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).ok()?;
    let length = decryptor
        .decrypt_padded_mut::<Pkcs7>(&mut buffer)
        .ok()?
        .len();
    buffer.truncate(length);
    Some(buffer)
}
