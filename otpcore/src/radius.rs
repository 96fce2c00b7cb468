//! The RADIUS codec: RFC 2865 Access-Request, Access-Accept
//! and Access-Reject with PAP, RFC 2866 Accounting-Request and
//! Accounting-Response, RFC 3579 Message-Authenticator and RFC 5997
//! Status-Server. No I/O: bytes in, bytes out.
//!
//! Decoding is strict and never panics: the length field must equal the
//! datagram's length (RFC 2865 would let trailing octets pass as padding;
//! no NAS sends them, so they are refused), every attribute's length must
//! be at least 2 and stay inside the packet. Access responses always carry
//! the Message-Authenticator as their first attribute (BlastRADIUS,
//! CVE-2024-3596); an Accounting-Response carries one, first, when its
//! request did.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Code, identifier, length and authenticator.
pub const HEADER_LEN: usize = 20;
/// Largest packet RFC 2865 allows.
pub const MAX_PACKET: usize = 4096;
/// Longest User-Password (RFC 2865 §5.2).
pub const MAX_PASSWORD: usize = 128;
/// Longest attribute value.
pub const MAX_VALUE: usize = 253;

/// Packet codes.
pub mod code {
    pub const ACCESS_REQUEST: u8 = 1;
    pub const ACCESS_ACCEPT: u8 = 2;
    pub const ACCESS_REJECT: u8 = 3;
    pub const ACCOUNTING_REQUEST: u8 = 4;
    pub const ACCOUNTING_RESPONSE: u8 = 5;
    pub const ACCESS_CHALLENGE: u8 = 11;
    pub const STATUS_SERVER: u8 = 12;
}

/// Attribute types.
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const CHAP_PASSWORD: u8 = 3;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// Why bytes are not a RADIUS packet, or cannot become one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    #[error("datagram of {0} bytes is shorter than the 20-byte RADIUS header")]
    Short(usize),
    #[error("datagram of {0} bytes is longer than 4096 bytes")]
    Long(usize),
    #[error("length field says {field} bytes, the datagram has {datagram}")]
    LengthMismatch { field: usize, datagram: usize },
    #[error("attribute at offset {0} has a bad length")]
    BadAttribute(usize),
    #[error("User-Password must be 16 to 128 bytes in blocks of 16")]
    BadPassword,
    #[error("Message-Authenticator must be 16 bytes")]
    BadMessageAuthenticator,
    #[error("attribute value longer than 253 bytes")]
    ValueTooLong,
    #[error("packet longer than 4096 bytes")]
    PacketTooLong,
    #[error("the codec adds the Message-Authenticator itself")]
    MessageAuthenticatorGiven,
}

/// One attribute of a decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u8,
    pub value: &'a [u8],
    /// Where the value starts in the packet.
    offset: usize,
}

/// A decoded packet, borrowing the datagram.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    attributes: Vec<Attribute<'a>>,
    raw: &'a [u8],
}

/// A client's shared secret with its HMAC-MD5 state keyed once: what a
/// server that checks and signs many packets of one client hashes with,
/// cloning the keyed state instead of keying HMAC-MD5 again for every
/// packet. Every function that takes a plain secret keys one for itself.
#[derive(Clone)]
pub struct Secret {
    secret: Zeroizing<Vec<u8>>,
    hmac: Hmac<Md5>,
}

impl Secret {
    /// Keys HMAC-MD5 with `secret`.
    pub fn new(secret: &[u8]) -> Secret {
        // HMAC takes a key of any length (a long one is hashed first).
        let hmac = match <Hmac<Md5> as Mac>::new_from_slice(secret) {
            Ok(hmac) => hmac,
            Err(_) => <Hmac<Md5> as Mac>::new(&Default::default()),
        };
        Secret {
            secret: Zeroizing::new(secret.to_vec()),
            hmac,
        }
    }

    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.secret
    }

    /// HMAC-MD5 of the concatenation of `parts`.
    fn hmac_md5(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = self.hmac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the Message-Authenticator of a packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAuthenticator {
    /// The packet has none.
    Absent,
    /// Exactly one, 16 bytes, and its HMAC-MD5 matches.
    Valid,
    /// Wrong length, several of them, or a mismatch.
    Invalid,
}

impl<'a> Packet<'a> {
    /// Decodes a datagram. Any packet code is accepted here; the caller
    /// decides which it answers.
    pub fn decode(data: &'a [u8]) -> Result<Packet<'a>, RadiusError> {
        if data.len() < HEADER_LEN {
            return Err(RadiusError::Short(data.len()));
        }
        if data.len() > MAX_PACKET {
            return Err(RadiusError::Long(data.len()));
        }
        let (Some(&code), Some(&identifier), Some(length), Some(auth)) = (
            data.first(),
            data.get(1),
            data.get(2..4),
            data.get(4..HEADER_LEN),
        ) else {
            return Err(RadiusError::Short(data.len()));
        };
        let field = usize::from(u16::from_be_bytes([
            length.first().copied().unwrap_or(0),
            length.get(1).copied().unwrap_or(0),
        ]));
        if field != data.len() {
            return Err(RadiusError::LengthMismatch {
                field,
                datagram: data.len(),
            });
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(auth);
        let mut attributes = Vec::new();
        let mut at = HEADER_LEN;
        while at < data.len() {
            let (Some(&kind), Some(&len)) = (data.get(at), data.get(at + 1)) else {
                return Err(RadiusError::BadAttribute(at));
            };
            let len = usize::from(len);
            if len < 2 {
                return Err(RadiusError::BadAttribute(at));
            }
            let Some(value) = data.get(at + 2..at + len) else {
                return Err(RadiusError::BadAttribute(at));
            };
            attributes.push(Attribute {
                kind,
                value,
                offset: at + 2,
            });
            at += len;
        }
        Ok(Packet {
            code,
            identifier,
            authenticator,
            attributes,
            raw: data,
        })
    }

    /// Every attribute, in packet order.
    pub fn attributes(&self) -> &[Attribute<'a>] {
        &self.attributes
    }

    /// The first attribute of type `kind`.
    pub fn attribute(&self, kind: u8) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.value)
    }

    /// How many attributes of type `kind` the packet holds.
    pub fn count(&self, kind: u8) -> usize {
        self.attributes.iter().filter(|a| a.kind == kind).count()
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// User-Name, if present.
    pub fn user_name(&self) -> Option<&'a [u8]> {
        self.attribute(attr::USER_NAME)
    }

    /// User-Password decrypted with `secret` and this (request) packet's
    /// authenticator, NUL padding stripped. `Ok(None)` when absent.
    pub fn user_password(&self, secret: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, RadiusError> {
        match self.attribute(attr::USER_PASSWORD) {
            None => Ok(None),
            Some(cipher) => decrypt_password(cipher, secret, &self.authenticator).map(Some),
        }
    }

    /// Checks the Message-Authenticator of a request (`Some(auth)` for a
    /// response: the request's authenticator, RFC 3579 §3.2).
    pub fn message_authenticator(
        &self,
        secret: &[u8],
        request_authenticator: Option<&[u8; 16]>,
    ) -> MessageAuthenticator {
        self.message_authenticator_with(&Secret::new(secret), request_authenticator)
    }

    /// [`Packet::message_authenticator`] with a secret keyed beforehand.
    /// The HMAC runs over the packet's own bytes, the authenticator field
    /// and the Message-Authenticator's value put in as they must be, with
    /// no copy of the packet.
    pub fn message_authenticator_with(
        &self,
        secret: &Secret,
        request_authenticator: Option<&[u8; 16]>,
    ) -> MessageAuthenticator {
        let mut found = self
            .attributes
            .iter()
            .filter(|a| a.kind == attr::MESSAGE_AUTHENTICATOR);
        let Some(ma) = found.next() else {
            return MessageAuthenticator::Absent;
        };
        if found.next().is_some() || ma.value.len() != 16 {
            return MessageAuthenticator::Invalid;
        }
        let authenticator = request_authenticator.unwrap_or(&self.authenticator);
        let (Some(head), Some(before), Some(after)) = (
            self.raw.get(..4),
            self.raw.get(HEADER_LEN..ma.offset),
            self.raw.get(ma.offset + 16..),
        ) else {
            return MessageAuthenticator::Invalid;
        };
        let expected = secret.hmac_md5(&[head, authenticator, before, &[0u8; 16], after]);
        if bool::from(expected.as_slice().ct_eq(ma.value)) {
            MessageAuthenticator::Valid
        } else {
            MessageAuthenticator::Invalid
        }
    }

    /// Whether this response's authenticator is right for a request with
    /// `request_authenticator` (and its Message-Authenticator, when it has
    /// one, too: over a zero authenticator field in an Accounting-Response,
    /// as FreeRADIUS computes it).
    pub fn is_response_to(&self, request_authenticator: &[u8; 16], secret: &[u8]) -> bool {
        let mut copy = self.raw.to_vec();
        match copy.get_mut(4..HEADER_LEN) {
            Some(field) => field.copy_from_slice(request_authenticator),
            None => return false,
        }
        let expected = Md5::new()
            .chain_update(&copy)
            .chain_update(secret)
            .finalize();
        let auth_ok = bool::from(expected.as_slice().ct_eq(&self.authenticator));
        let ma_authenticator = if self.code == code::ACCOUNTING_RESPONSE {
            &[0u8; 16]
        } else {
            request_authenticator
        };
        let ma_ok = self.message_authenticator(secret, Some(ma_authenticator))
            != MessageAuthenticator::Invalid;
        auth_ok && ma_ok
    }

    /// Whether this Access response answers a request with
    /// `request_authenticator`, and proves it twice: the Response
    /// Authenticator is right and a valid Message-Authenticator is present.
    /// What a client that sent a Message-Authenticator accepts; an answer
    /// without one is as good as forged (BlastRADIUS, CVE-2024-3596).
    pub fn is_authenticated_response_to(
        &self,
        request_authenticator: &[u8; 16],
        secret: &[u8],
    ) -> bool {
        self.is_response_to(request_authenticator, secret)
            && self.message_authenticator(secret, Some(request_authenticator))
                == MessageAuthenticator::Valid
    }

    /// Whether this Accounting-Request's Request Authenticator is
    /// MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret)
    /// (RFC 2866 §3).
    pub fn accounting_request_ok(&self, secret: &[u8]) -> bool {
        let expected = accounting_request_authenticator(self.raw, secret);
        bool::from(expected.as_slice().ct_eq(&self.authenticator))
    }

    /// Checks the Message-Authenticator of an Accounting-Request: computed
    /// with the authenticator field zeroed (RFC 3579 §3.2, as FreeRADIUS
    /// and every NAS do it).
    pub fn accounting_message_authenticator(&self, secret: &Secret) -> MessageAuthenticator {
        self.message_authenticator_with(secret, Some(&[0u8; 16]))
    }
}

/// The Request Authenticator of an Accounting-Request `packet` (whatever
/// its authenticator field holds): MD5 over the packet with that field
/// zeroed, then the secret.
pub fn accounting_request_authenticator(packet: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut hash = Md5::new();
    hash.update(packet.get(..4).unwrap_or_default());
    hash.update([0u8; 16]);
    hash.update(packet.get(HEADER_LEN..).unwrap_or_default());
    hash.update(secret);
    hash.finalize().into()
}

/// Decrypts a User-Password (RFC 2865 §5.2) and strips the NUL padding.
pub fn decrypt_password(
    cipher: &[u8],
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Zeroizing<Vec<u8>>, RadiusError> {
    if cipher.len() < 16
        || cipher.len() > MAX_PASSWORD
        || !cipher.chunks_exact(16).remainder().is_empty()
    {
        return Err(RadiusError::BadPassword);
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(cipher.len()));
    let mut previous: &[u8] = authenticator;
    for block in cipher.chunks_exact(16) {
        let key = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        plain.extend(block.iter().zip(key.iter()).map(|(c, k)| c ^ k));
        previous = block;
    }
    while plain.last() == Some(&0) {
        plain.pop();
    }
    Ok(plain)
}

/// Encrypts a User-Password (RFC 2865 §5.2), padding it with NULs to a
/// multiple of 16 bytes.
pub fn encrypt_password(
    password: &[u8],
    secret: &[u8],
    authenticator: &[u8; 16],
) -> Result<Vec<u8>, RadiusError> {
    if password.len() > MAX_PASSWORD {
        return Err(RadiusError::BadPassword);
    }
    let padded_len = password.len().div_ceil(16).max(1) * 16;
    let mut padded = Zeroizing::new(password.to_vec());
    padded.resize(padded_len, 0);
    let mut cipher: Vec<u8> = Vec::with_capacity(padded_len);
    for (i, block) in padded.chunks_exact(16).enumerate() {
        let previous: &[u8] = if i == 0 {
            authenticator
        } else {
            cipher.get((i - 1) * 16..i * 16).unwrap_or_default()
        };
        let key = Md5::new()
            .chain_update(secret)
            .chain_update(previous)
            .finalize();
        let encrypted: Vec<u8> = block.iter().zip(key.iter()).map(|(p, k)| p ^ k).collect();
        cipher.extend(encrypted);
    }
    Ok(cipher)
}

/// Header plus attributes, the Message-Authenticator (zeroed) first when
/// `with_ma`; returns the packet and where the MA's value sits.
fn assemble(
    code: u8,
    identifier: u8,
    authenticator: &[u8; 16],
    attributes: &[(u8, &[u8])],
    with_ma: bool,
) -> Result<(Vec<u8>, Option<usize>), RadiusError> {
    let length = HEADER_LEN
        + if with_ma { 18 } else { 0 }
        + attributes
            .iter()
            .map(|(_, value)| 2 + value.len())
            .sum::<usize>();
    let mut packet = Vec::with_capacity(length.min(MAX_PACKET));
    packet.extend_from_slice(&[code, identifier, 0, 0]);
    packet.extend_from_slice(authenticator);
    let ma_at = if with_ma {
        packet.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
        packet.extend_from_slice(&[0u8; 16]);
        Some(HEADER_LEN + 2)
    } else {
        None
    };
    for (kind, value) in attributes {
        if *kind == attr::MESSAGE_AUTHENTICATOR {
            return Err(RadiusError::MessageAuthenticatorGiven);
        }
        if value.len() > MAX_VALUE {
            return Err(RadiusError::ValueTooLong);
        }
        packet.push(*kind);
        packet.push(u8::try_from(value.len() + 2).map_err(|_| RadiusError::ValueTooLong)?);
        packet.extend_from_slice(value);
        if packet.len() > MAX_PACKET {
            return Err(RadiusError::PacketTooLong);
        }
    }
    let length = u16::try_from(packet.len()).map_err(|_| RadiusError::PacketTooLong)?;
    if let Some(field) = packet.get_mut(2..4) {
        field.copy_from_slice(&length.to_be_bytes());
    }
    Ok((packet, ma_at))
}

fn fill_ma(packet: &mut [u8], ma_at: Option<usize>, secret: &Secret) -> Result<(), RadiusError> {
    if let Some(at) = ma_at {
        let mac = secret.hmac_md5(&[packet]);
        packet
            .get_mut(at..at + 16)
            .ok_or(RadiusError::BadMessageAuthenticator)?
            .copy_from_slice(&mac);
    }
    Ok(())
}

/// Encodes a response (Access-Accept, Access-Reject, or Access-Accept to a
/// Status-Server) to a request with `request_authenticator`: the
/// Message-Authenticator first, then `attributes`, and the Response
/// Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
pub fn encode_response(
    code: u8,
    identifier: u8,
    request_authenticator: &[u8; 16],
    attributes: &[(u8, &[u8])],
    secret: &[u8],
) -> Result<Vec<u8>, RadiusError> {
    encode_response_with(
        code,
        identifier,
        request_authenticator,
        attributes,
        &Secret::new(secret),
    )
}

/// [`encode_response`] with a secret keyed beforehand.
pub fn encode_response_with(
    code: u8,
    identifier: u8,
    request_authenticator: &[u8; 16],
    attributes: &[(u8, &[u8])],
    secret: &Secret,
) -> Result<Vec<u8>, RadiusError> {
    encode_reply(
        code,
        identifier,
        request_authenticator,
        attributes,
        secret,
        true,
    )
}

/// An Accounting-Response (RFC 2866 §4.2) to an Accounting-Request with
/// `request_authenticator`, without attributes but a Message-Authenticator
/// (first) when `message_authenticator` (when the request had one).
pub fn encode_accounting_response(
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &Secret,
    message_authenticator: bool,
) -> Result<Vec<u8>, RadiusError> {
    encode_reply(
        code::ACCOUNTING_RESPONSE,
        identifier,
        request_authenticator,
        &[],
        secret,
        message_authenticator,
    )
}

fn encode_reply(
    code: u8,
    identifier: u8,
    request_authenticator: &[u8; 16],
    attributes: &[(u8, &[u8])],
    secret: &Secret,
    with_ma: bool,
) -> Result<Vec<u8>, RadiusError> {
    // The Message-Authenticator of an Accounting-Response is computed with
    // a zero authenticator field, as FreeRADIUS (radclient) checks it; that
    // of an Access response with the request's (RFC 3579 §3.2).
    let ma_authenticator = if code == code::ACCOUNTING_RESPONSE {
        &[0u8; 16]
    } else {
        request_authenticator
    };
    let (mut packet, ma_at) = assemble(code, identifier, ma_authenticator, attributes, with_ma)?;
    fill_ma(&mut packet, ma_at, secret)?;
    packet
        .get_mut(4..HEADER_LEN)
        .ok_or(RadiusError::PacketTooLong)?
        .copy_from_slice(request_authenticator);
    let auth = Md5::new()
        .chain_update(&packet)
        .chain_update(secret.bytes())
        .finalize();
    packet
        .get_mut(4..HEADER_LEN)
        .ok_or(RadiusError::PacketTooLong)?
        .copy_from_slice(&auth);
    Ok(packet)
}

/// Encodes a request (what a NAS sends; for tests and tools):
/// `attributes` as given (a User-Password value must already be
/// encrypted, see [`encrypt_password`]), with a Message-Authenticator
/// first when `message_authenticator`.
pub fn encode_request(
    code: u8,
    identifier: u8,
    authenticator: &[u8; 16],
    attributes: &[(u8, &[u8])],
    secret: &[u8],
    message_authenticator: bool,
) -> Result<Vec<u8>, RadiusError> {
    let (mut packet, ma_at) = assemble(
        code,
        identifier,
        authenticator,
        attributes,
        message_authenticator,
    )?;
    fill_ma(&mut packet, ma_at, &Secret::new(secret))?;
    Ok(packet)
}

/// An Accounting-Request (what a NAS sends; for tests and tools): the
/// Message-Authenticator (when `message_authenticator`, first) computed
/// over the packet with a zero authenticator, then the Request
/// Authenticator over the whole packet (RFC 2866 §3).
pub fn encode_accounting_request(
    identifier: u8,
    attributes: &[(u8, &[u8])],
    secret: &[u8],
    message_authenticator: bool,
) -> Result<Vec<u8>, RadiusError> {
    let mut packet = encode_request(
        code::ACCOUNTING_REQUEST,
        identifier,
        &[0u8; 16],
        attributes,
        secret,
        message_authenticator,
    )?;
    let auth = accounting_request_authenticator(&packet, secret);
    packet
        .get_mut(4..HEADER_LEN)
        .ok_or(RadiusError::PacketTooLong)?
        .copy_from_slice(&auth);
    Ok(packet)
}

/// An Access-Request with User-Name and User-Password (PAP).
pub fn access_request(
    identifier: u8,
    authenticator: &[u8; 16],
    user: &[u8],
    password: &[u8],
    secret: &[u8],
    message_authenticator: bool,
) -> Result<Vec<u8>, RadiusError> {
    let cipher = encrypt_password(password, secret, authenticator)?;
    encode_request(
        code::ACCESS_REQUEST,
        identifier,
        authenticator,
        &[(attr::USER_NAME, user), (attr::USER_PASSWORD, &cipher)],
        secret,
        message_authenticator,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        data_encoding::HEXLOWER
            .decode(text.replace(' ', "").as_bytes())
            .expect("hex")
    }

    // RFC 2865 §7.1: nemo / arctangent, secret xyzzy5461.
    const RFC_REQUEST: &str = "01000038 0f403f9473978057bd83d5cb98f4227a \
        01066e656d6f 02120dbe708d93d413ce3196e43f782a0aee 0406c0a80110 0506 00000003";
    const RFC_ACCEPT: &str = "02000026 86fe220e7624ba2a1005f6bf9b55e0b2 \
        0606 00000001 0f06 00000000 0e06 c0a80103";

    #[test]
    fn rfc2865_example_decrypts() {
        let bytes = hex(RFC_REQUEST);
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, code::ACCESS_REQUEST);
        assert_eq!(packet.identifier, 0);
        assert_eq!(packet.user_name(), Some(&b"nemo"[..]));
        let password = packet.user_password(b"xyzzy5461").unwrap().unwrap();
        assert_eq!(password.as_slice(), b"arctangent");
        assert_eq!(packet.attributes().len(), 4);
        assert_eq!(
            packet.message_authenticator(b"xyzzy5461", None),
            MessageAuthenticator::Absent
        );
        // And our encryption gives the RFC's cipher text.
        let cipher = encrypt_password(b"arctangent", b"xyzzy5461", &packet.authenticator).unwrap();
        assert_eq!(
            Some(cipher.as_slice()),
            packet.attribute(attr::USER_PASSWORD)
        );
    }

    #[test]
    fn rfc2865_example_response_authenticator() {
        let request = hex(RFC_REQUEST);
        let request = Packet::decode(&request).unwrap();
        let accept = hex(RFC_ACCEPT);
        let accept = Packet::decode(&accept).unwrap();
        assert!(accept.is_response_to(&request.authenticator, b"xyzzy5461"));
        assert!(!accept.is_response_to(&request.authenticator, b"wrong"));
    }

    // Computed by hand (Python's hashlib) from RFC 2866 §3 and §4.2: nemo,
    // Acct-Status-Type Start, Acct-Session-Id "00000001", identifier 7,
    // secret xyzzy5461.
    const ACCT_REQUEST: &str = "0407002a 3bf689cd3627f92e669b4ac5563c17e2 \
        01066e656d6f 2806 00000001 2c0a 3030303030303031";
    const ACCT_RESPONSE: &str = "05070014 c2bb2bc3ddabf6a880356414bef00cc4";

    #[test]
    fn accounting_vector() {
        let bytes = hex(ACCT_REQUEST);
        let request = Packet::decode(&bytes).unwrap();
        assert_eq!(request.code, code::ACCOUNTING_REQUEST);
        assert!(request.accounting_request_ok(b"xyzzy5461"));
        assert!(!request.accounting_request_ok(b"xyzzy5462"));
        assert_eq!(
            request.accounting_message_authenticator(&Secret::new(b"xyzzy5461")),
            MessageAuthenticator::Absent
        );
        let encoded = encode_accounting_request(
            7,
            &[
                (attr::USER_NAME, b"nemo"),
                (attr::ACCT_STATUS_TYPE, &[0, 0, 0, 1]),
                (attr::ACCT_SESSION_ID, b"00000001"),
            ],
            b"xyzzy5461",
            false,
        )
        .unwrap();
        assert_eq!(encoded, bytes);
        let response = encode_accounting_response(
            7,
            &request.authenticator,
            &Secret::new(b"xyzzy5461"),
            false,
        )
        .unwrap();
        assert_eq!(response, hex(ACCT_RESPONSE));
        let decoded = Packet::decode(&response).unwrap();
        assert!(decoded.is_response_to(&request.authenticator, b"xyzzy5461"));
        assert!(!decoded.is_response_to(&request.authenticator, b"other"));
    }

    #[test]
    fn accounting_round_trip_with_message_authenticator() {
        let secret = b"acct-secret";
        let bytes = encode_accounting_request(
            200,
            &[
                (attr::ACCT_STATUS_TYPE, &[0, 0, 0, 2]),
                (attr::USER_NAME, b"alice"),
            ],
            secret,
            true,
        )
        .unwrap();
        let request = Packet::decode(&bytes).unwrap();
        assert_eq!(request.attributes()[0].kind, attr::MESSAGE_AUTHENTICATOR);
        assert!(request.accounting_request_ok(secret));
        assert_eq!(
            request.accounting_message_authenticator(&Secret::new(secret)),
            MessageAuthenticator::Valid
        );
        assert_eq!(
            request.accounting_message_authenticator(&Secret::new(b"other")),
            MessageAuthenticator::Invalid
        );
        assert_eq!(
            accounting_request_authenticator(&bytes, secret),
            request.authenticator
        );
        // A flipped bit anywhere breaks the Request Authenticator.
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 1;
            if let Ok(p) = Packet::decode(&tampered) {
                assert!(!p.accounting_request_ok(secret), "byte {i}");
            }
        }
        let response =
            encode_accounting_response(200, &request.authenticator, &Secret::new(secret), true)
                .unwrap();
        let answer = Packet::decode(&response).unwrap();
        assert_eq!(answer.code, code::ACCOUNTING_RESPONSE);
        assert_eq!(answer.identifier, 200);
        assert_eq!(answer.attributes().len(), 1);
        assert_eq!(answer.attributes()[0].kind, attr::MESSAGE_AUTHENTICATOR);
        assert!(answer.is_response_to(&request.authenticator, secret));
        assert_eq!(
            answer.message_authenticator(secret, Some(&[0u8; 16])),
            MessageAuthenticator::Valid
        );
        assert!(!answer.is_response_to(&[0u8; 16], secret));
        let bare =
            encode_accounting_response(200, &request.authenticator, &Secret::new(secret), false)
                .unwrap();
        assert_eq!(bare.len(), HEADER_LEN);
        assert!(Packet::decode(&bare)
            .unwrap()
            .is_response_to(&request.authenticator, secret));
    }

    #[test]
    fn response_has_message_authenticator_first_and_verifies() {
        let auth = [7u8; 16];
        let bytes = encode_response(
            code::ACCESS_REJECT,
            42,
            &auth,
            &[(attr::REPLY_MESSAGE, b"Authentication failed")],
            b"s3cret",
        )
        .unwrap();
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.code, code::ACCESS_REJECT);
        assert_eq!(packet.identifier, 42);
        assert_eq!(packet.attributes()[0].kind, attr::MESSAGE_AUTHENTICATOR);
        assert_eq!(
            packet.attribute(attr::REPLY_MESSAGE),
            Some(&b"Authentication failed"[..])
        );
        assert!(packet.is_response_to(&auth, b"s3cret"));
        assert_eq!(
            packet.message_authenticator(b"s3cret", Some(&auth)),
            MessageAuthenticator::Valid
        );
        assert!(!packet.is_response_to(&[8u8; 16], b"s3cret"));
    }

    #[test]
    fn an_authenticated_response_needs_both_authenticators() {
        let auth = [0x5au8; 16];
        let secret = b"pam-secret";
        let accept = encode_response(code::ACCESS_ACCEPT, 3, &auth, &[], secret).unwrap();
        let packet = Packet::decode(&accept).unwrap();
        assert!(packet.is_authenticated_response_to(&auth, secret));
        assert!(!packet.is_authenticated_response_to(&auth, b"other"));
        assert!(!packet.is_authenticated_response_to(&[0x5b; 16], secret));

        // A right Response Authenticator without a Message-Authenticator:
        // good enough for is_response_to, not for an authenticated answer.
        let bare = encode_reply(
            code::ACCESS_ACCEPT,
            3,
            &auth,
            &[],
            &Secret::new(secret),
            false,
        )
        .unwrap();
        let bare = Packet::decode(&bare).unwrap();
        assert!(bare.is_response_to(&auth, secret));
        assert!(!bare.is_authenticated_response_to(&auth, secret));
        let rfc_request = hex(RFC_REQUEST);
        let rfc_request = Packet::decode(&rfc_request).unwrap();
        let rfc_accept = hex(RFC_ACCEPT);
        let rfc_accept = Packet::decode(&rfc_accept).unwrap();
        assert!(!rfc_accept.is_authenticated_response_to(&rfc_request.authenticator, b"xyzzy5461"));

        // A valid Message-Authenticator under a wrong Response
        // Authenticator: refused too.
        let mut forged = accept.clone();
        forged[4] ^= 1;
        let forged = Packet::decode(&forged).unwrap();
        assert_eq!(
            forged.message_authenticator(secret, Some(&auth)),
            MessageAuthenticator::Valid
        );
        assert!(!forged.is_authenticated_response_to(&auth, secret));

        // A flipped bit anywhere else breaks it as well.
        for i in 0..accept.len() {
            let mut tampered = accept.clone();
            tampered[i] ^= 0x80;
            if let Ok(p) = Packet::decode(&tampered) {
                assert!(!p.is_authenticated_response_to(&auth, secret), "byte {i}");
            }
        }
    }

    #[test]
    fn request_round_trip_and_message_authenticator() {
        let auth = [0x11u8; 16];
        let bytes = access_request(9, &auth, b"alice", b"123456", b"secret", true).unwrap();
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.attributes()[0].kind, attr::MESSAGE_AUTHENTICATOR);
        assert_eq!(
            packet.message_authenticator(b"secret", None),
            MessageAuthenticator::Valid
        );
        assert_eq!(
            packet.message_authenticator(b"other", None),
            MessageAuthenticator::Invalid
        );
        assert_eq!(packet.user_name(), Some(&b"alice"[..]));
        assert_eq!(
            packet.user_password(b"secret").unwrap().unwrap().as_slice(),
            b"123456"
        );
        // A flipped bit anywhere breaks the Message-Authenticator.
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 1;
            if let Ok(p) = Packet::decode(&tampered) {
                assert_ne!(
                    p.message_authenticator(b"secret", None),
                    MessageAuthenticator::Valid,
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn several_of_an_attribute_and_unknown_ones() {
        let auth = [1u8; 16];
        let bytes = encode_request(
            code::ACCESS_REQUEST,
            1,
            &auth,
            &[
                (attr::USER_NAME, b"bob"),
                (200, b"vendor junk"),
                (attr::REPLY_MESSAGE, b"a"),
                (attr::REPLY_MESSAGE, b"b"),
                (attr::USER_NAME, b"second"),
            ],
            b"k",
            false,
        )
        .unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.user_name(), Some(&b"bob"[..]));
        assert_eq!(p.count(attr::REPLY_MESSAGE), 2);
        assert_eq!(p.count(attr::USER_NAME), 2);
        assert_eq!(p.attribute(200), Some(&b"vendor junk"[..]));
        assert_eq!(p.user_password(b"k").unwrap(), None);
    }

    #[test]
    fn two_message_authenticators_are_invalid() {
        let auth = [3u8; 16];
        let mut bytes = encode_request(code::ACCESS_REQUEST, 1, &auth, &[], b"k", true).unwrap();
        bytes.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
        bytes.extend_from_slice(&[0u8; 16]);
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        bytes[2..4].copy_from_slice(&len);
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(
            p.message_authenticator(b"k", None),
            MessageAuthenticator::Invalid
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        let auth = [5u8; 16];
        let good = access_request(1, &auth, b"u", b"1", b"k", true).unwrap();
        assert!(Packet::decode(&good).is_ok());
        assert_eq!(
            Packet::decode(&good[..19]).err(),
            Some(RadiusError::Short(19))
        );
        // Length field too large and too small.
        let mut long = good.clone();
        long[3] = long[3].wrapping_add(1);
        assert!(matches!(
            Packet::decode(&long),
            Err(RadiusError::LengthMismatch { .. })
        ));
        let mut short = good.clone();
        short[3] = short[3].wrapping_sub(1);
        assert!(Packet::decode(&short).is_err());
        let mut tiny = good.clone();
        tiny[2] = 0;
        tiny[3] = 4;
        assert!(Packet::decode(&tiny).is_err());
        // Attribute lengths 0, 1 and past the end.
        for bad_len in [0u8, 1, 200] {
            let mut p = good.clone();
            p[HEADER_LEN + 1] = bad_len;
            assert!(
                matches!(Packet::decode(&p), Err(RadiusError::BadAttribute(20))),
                "attribute length {bad_len}"
            );
        }
        // Truncated Message-Authenticator: decodes, but is invalid.
        let mut truncated =
            encode_request(code::ACCESS_REQUEST, 1, &auth, &[], b"k", true).unwrap();
        truncated.truncate(HEADER_LEN + 10);
        truncated[HEADER_LEN + 1] = 10;
        truncated[3] = u8::try_from(HEADER_LEN + 10).unwrap();
        let p = Packet::decode(&truncated).unwrap();
        assert_eq!(
            p.message_authenticator(b"k", None),
            MessageAuthenticator::Invalid
        );
        assert!(Packet::decode(&vec![0u8; 4097]).is_err());
        // Bad User-Password lengths.
        let bad = encode_request(
            code::ACCESS_REQUEST,
            1,
            &auth,
            &[(attr::USER_PASSWORD, b"short")],
            b"k",
            false,
        )
        .unwrap();
        assert_eq!(
            Packet::decode(&bad).unwrap().user_password(b"k").err(),
            Some(RadiusError::BadPassword)
        );
    }

    #[test]
    fn encoder_limits() {
        let auth = [0u8; 16];
        assert_eq!(
            encode_response(code::ACCESS_ACCEPT, 0, &auth, &[(1, &[0u8; 254])], b"k"),
            Err(RadiusError::ValueTooLong)
        );
        assert_eq!(
            encode_response(code::ACCESS_ACCEPT, 0, &auth, &[(80, &[0u8; 16])], b"k"),
            Err(RadiusError::MessageAuthenticatorGiven)
        );
        let many: Vec<(u8, &[u8])> = (0..20).map(|_| (26u8, &[0u8; 250][..])).collect();
        assert_eq!(
            encode_response(code::ACCESS_ACCEPT, 0, &auth, &many, b"k"),
            Err(RadiusError::PacketTooLong)
        );
        assert_eq!(
            encrypt_password(&[1u8; 129], b"k", &auth),
            Err(RadiusError::BadPassword)
        );
        assert_eq!(encrypt_password(b"", b"k", &auth).unwrap().len(), 16);
    }

    fn exercise(p: &Packet<'_>) {
        let _ = p.user_password(b"secret");
        let _ = p.message_authenticator(b"secret", None);
        let _ = p.message_authenticator(b"secret", Some(&[0u8; 16]));
        let _ = p.is_response_to(&[0u8; 16], b"secret");
        let _ = p.is_authenticated_response_to(&[0u8; 16], b"secret");
        let _ = p.accounting_request_ok(b"secret");
        let _ = p.accounting_message_authenticator(&Secret::new(b"secret"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4200)) {
            if let Ok(p) = Packet::decode(&data) {
                exercise(&p);
            }
        }

        #[test]
        fn decoding_mutated_packets_never_panics(
            user in proptest::collection::vec(any::<u8>(), 1..=64),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = access_request(1, &[9u8; 16], &user, b"123456", b"secret", true).unwrap();
            for (at, value) in edits {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(p) = Packet::decode(&bytes) {
                exercise(&p);
            }
        }

        #[test]
        fn request_encode_decode_round_trips(
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
            user in proptest::collection::vec(any::<u8>(), 1..=MAX_VALUE),
            password in proptest::collection::vec(1u8..=255, 0..=MAX_PASSWORD),
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            with_ma in any::<bool>(),
        ) {
            let bytes = access_request(identifier, &authenticator, &user, &password, &secret, with_ma).unwrap();
            let p = Packet::decode(&bytes).unwrap();
            prop_assert_eq!(p.code, code::ACCESS_REQUEST);
            prop_assert_eq!(p.identifier, identifier);
            prop_assert_eq!(p.authenticator, authenticator);
            prop_assert_eq!(p.user_name(), Some(user.as_slice()));
            let decrypted = p.user_password(&secret).unwrap().unwrap();
            prop_assert_eq!(decrypted.as_slice(), password.as_slice());
            let expected = if with_ma { MessageAuthenticator::Valid } else { MessageAuthenticator::Absent };
            prop_assert_eq!(p.message_authenticator(&secret, None), expected);
        }

        #[test]
        fn message_authenticator_anywhere_checks_as_over_a_copy(
            identifier in any::<u8>(),
            authenticator in any::<[u8; 16]>(),
            before in proptest::collection::vec((2u8..80, proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
            after in proptest::collection::vec((2u8..80, proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
            secret in proptest::collection::vec(any::<u8>(), 1..100),
            response_to in proptest::option::of(any::<[u8; 16]>()),
            flip in any::<usize>(),
        ) {
            // The packet, its Message-Authenticator somewhere in the middle,
            // signed the plain way: HMAC-MD5 over a copy with the value
            // zeroed (and the request's authenticator in place).
            let mut packet = vec![code::ACCESS_REQUEST, identifier, 0, 0];
            packet.extend_from_slice(&authenticator);
            for (kind, value) in &before {
                packet.extend_from_slice(&[*kind, (value.len() + 2) as u8]);
                packet.extend_from_slice(value);
            }
            packet.extend_from_slice(&[attr::MESSAGE_AUTHENTICATOR, 18]);
            let ma_at = packet.len();
            packet.extend_from_slice(&[0; 16]);
            for (kind, value) in &after {
                packet.extend_from_slice(&[*kind, (value.len() + 2) as u8]);
                packet.extend_from_slice(value);
            }
            let len = packet.len() as u16;
            packet[2..4].copy_from_slice(&len.to_be_bytes());
            let mut signed = packet.clone();
            if let Some(auth) = &response_to {
                signed[4..HEADER_LEN].copy_from_slice(auth);
            }
            let mut mac = <Hmac<Md5> as Mac>::new_from_slice(&secret).unwrap();
            mac.update(&signed);
            packet[ma_at..ma_at + 16].copy_from_slice(&mac.finalize().into_bytes());
            let keyed = Secret::new(&secret);
            let p = Packet::decode(&packet).unwrap();
            prop_assert_eq!(p.message_authenticator_with(&keyed, response_to.as_ref()), MessageAuthenticator::Valid);
            prop_assert_eq!(p.message_authenticator(&secret, response_to.as_ref()), MessageAuthenticator::Valid);
            // Any flipped bit outside the length field and the authenticator
            // of a response spoils it.
            let at = flip % packet.len();
            let ignored = (2..4).contains(&at)
                || (response_to.is_some() && (4..HEADER_LEN).contains(&at));
            if !ignored {
                let mut spoiled = packet.clone();
                spoiled[at] ^= 1;
                if let Ok(p) = Packet::decode(&spoiled) {
                    prop_assert_ne!(p.message_authenticator_with(&keyed, response_to.as_ref()), MessageAuthenticator::Valid);
                }
            }
        }

        #[test]
        fn response_encode_decode_round_trips(
            accept in any::<bool>(),
            identifier in any::<u8>(),
            request_auth in any::<[u8; 16]>(),
            message in proptest::collection::vec(any::<u8>(), 0..=MAX_VALUE),
            secret in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let code = if accept { code::ACCESS_ACCEPT } else { code::ACCESS_REJECT };
            let bytes = encode_response(code, identifier, &request_auth, &[(attr::REPLY_MESSAGE, &message)], &secret).unwrap();
            let p = Packet::decode(&bytes).unwrap();
            prop_assert_eq!(p.code, code);
            prop_assert_eq!(p.identifier, identifier);
            prop_assert_eq!(p.attributes()[0].kind, attr::MESSAGE_AUTHENTICATOR);
            prop_assert_eq!(p.attribute(attr::REPLY_MESSAGE), Some(message.as_slice()));
            prop_assert!(p.is_response_to(&request_auth, &secret));
            prop_assert!(p.is_authenticated_response_to(&request_auth, &secret));
            prop_assert_eq!(p.message_authenticator(&secret, Some(&request_auth)), MessageAuthenticator::Valid);
        }
    }
}
