//! Property tests: any bytes, and damaged seed files, are refused without
//! a panic and without an error that shows a secret or the key; generated
//! seed files, plain or encrypted, read back exactly as written.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::BlockEncryptMut;
use proptest::prelude::*;

use super::*;

/// AES-128-CBC with PKCS#7 padding, the IV first, as seed files hold it.
pub(super) fn encrypt(key: &[u8; 16], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    let mut buffer = plain.to_vec();
    buffer.resize(plain.len() / AES_BLOCK * AES_BLOCK + AES_BLOCK, 0);
    let encryptor = cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv).expect("key and IV");
    let cipher = encryptor
        .encrypt_padded_mut::<Pkcs7>(&mut buffer, plain.len())
        .expect("room for the padding");
    let mut out = iv.to_vec();
    out.extend_from_slice(cipher);
    out
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// What a generated token should read back as.
#[derive(Debug, Clone)]
struct Spec {
    serial: String,
    secret: Vec<u8>,
    digits: u32,
    algorithm: Algorithm,
    kind: Kind,
}

/// How a generated file is encrypted.
#[derive(Debug, Clone)]
struct Protection {
    psk: [u8; 16],
    iv: [u8; 16],
    /// `None`: the older form, the MAC keyed with the pre-shared key.
    mac_key: Option<Vec<u8>>,
}

impl Protection {
    fn mac_key(&self) -> Vec<u8> {
        self.mac_key.clone().unwrap_or_else(|| self.psk.to_vec())
    }

    fn hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.psk)
    }
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Sha1),
        Just(Algorithm::Sha256),
        Just(Algorithm::Sha512)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        any::<u64>().prop_map(|counter| Kind::Hotp { counter }),
        (PERIOD.min..=PERIOD.max, any::<i64>())
            .prop_map(|(period, drift)| Kind::Totp { period, drift }),
    ]
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    let one = (
        "[A-Za-z0-9._:]{1,40}",
        proptest::collection::vec(any::<u8>(), SECRET_BYTES),
        6u32..=8,
        algorithm(),
        kind(),
    );
    proptest::collection::vec(one, 1..5).prop_map(|tokens| {
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, (serial, secret, digits, algorithm, kind))| Spec {
                // Unique within the file.
                serial: format!("{serial}-{i}"),
                secret,
                digits,
                algorithm,
                kind,
            })
            .collect()
    })
}

fn protection() -> impl Strategy<Value = Option<Protection>> {
    proptest::option::of(
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
        )
            .prop_map(|(psk, iv, mac_key)| Protection { psk, iv, mac_key }),
    )
}

/// A data element holding `plain` (base64 for the secret, decimal text
/// for integers) or, protected, `bytes` encrypted with its MAC.
fn data(name: &str, plain: &str, bytes: &[u8], protection: Option<&Protection>) -> String {
    match protection {
        None => format!("<{name}><PlainValue>{plain}</PlainValue></{name}>"),
        Some(p) => {
            let cipher = encrypt(&p.psk, &p.iv, bytes);
            format!(
                r#"<{name}><EncryptedValue><xenc:EncryptionMethod Algorithm="{AES128_CBC}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></EncryptedValue><ValueMAC>{}</ValueMAC></{name}>"#,
                data_encoding::BASE64.encode(&cipher),
                data_encoding::BASE64.encode(&mac(&p.mac_key(), &cipher)),
            )
        }
    }
}

/// An integer as a seed file writer encrypts it: big-endian, no leading
/// zero bytes (one byte for 0).
fn be_bytes(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    bytes[first..].to_vec()
}

fn document(specs: &[Spec], protection: Option<&Protection>) -> String {
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">"#,
    );
    if let Some(p) = protection {
        out.push_str("<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>");
        out.push_str(&format!(r#"<MACMethod Algorithm="{}">"#, HMAC_SHA1[0]));
        if let Some(key) = &p.mac_key {
            out.push_str(&format!(
                r#"<MACKey><xenc:EncryptionMethod Algorithm="{AES128_CBC}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></MACKey>"#,
                data_encoding::BASE64.encode(&encrypt(&p.psk, &p.iv, key))
            ));
        }
        out.push_str("</MACMethod>");
    }
    for spec in specs {
        let integer = |name: &str, n: u64| data(name, &n.to_string(), &be_bytes(n), protection);
        let (uri, fields) = match spec.kind {
            Kind::Hotp { counter } => (HOTP, integer("Counter", counter)),
            Kind::Totp { period, drift } => (
                TOTP,
                format!(
                    "{}{}<TimeDrift><PlainValue>{drift}</PlainValue></TimeDrift>",
                    integer("Time", 0),
                    integer("TimeInterval", period)
                ),
            ),
        };
        out.push_str(&format!(
            r#"
<pskc:KeyPackage><pskc:DeviceInfo><pskc:Manufacturer>Feitian</pskc:Manufacturer><pskc:SerialNo>{}</pskc:SerialNo><pskc:Model>c200</pskc:Model></pskc:DeviceInfo><pskc:Key Id="{}" Algorithm="{uri}"><AlgorithmParameters><Suite>HMAC-{}</Suite><ResponseFormat Length="{}" Encoding="DECIMAL"/></AlgorithmParameters><Data>{}{fields}</Data></pskc:Key></pskc:KeyPackage>"#,
            spec.serial,
            spec.serial,
            spec.algorithm.as_str(),
            spec.digits,
            data(
                "Secret",
                &data_encoding::BASE64.encode(&spec.secret),
                &spec.secret,
                protection
            ),
        ));
    }
    out.push_str("\n</pskc:KeyContainer>\n");
    out
}

/// Texts that must never appear in an error: each secret in base64 and
/// hex, and the keys.
fn confidential(specs: &[Spec], protection: Option<&Protection>) -> Vec<String> {
    let mut texts = Vec::new();
    for spec in specs {
        texts.push(data_encoding::BASE64.encode(&spec.secret));
        texts.push(data_encoding::HEXLOWER.encode(&spec.secret));
        texts.push(data_encoding::HEXUPPER.encode(&spec.secret));
    }
    if let Some(p) = protection {
        texts.push(p.hex());
        texts.push(p.hex().to_uppercase());
        if let Some(key) = &p.mac_key {
            texts.push(data_encoding::HEXLOWER.encode(key));
        }
    }
    texts
}

/// One change to a document's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Remove(usize, usize),
    Repeat(usize, usize),
    Insert(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (any::<usize>(), 1usize..200).prop_map(|(at, n)| Mutation::Repeat(at, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "<",
                ">",
                "/>",
                "\"",
                "&amp;",
                "&#0;",
                "&x;",
                "<!--",
                "-->",
                "<![CDATA[",
                "]]>",
                "<!DOCTYPE a>",
                "\u{0}",
                "\u{feff}",
                "é",
                "=",
                "<EncryptedValue>",
                "<PlainValue>AAAA</PlainValue>",
                "</Data>",
                "<Data>",
            ])
        )
            .prop_map(|(at, s)| Mutation::Insert(at, s)),
    ]
}

fn mutate(document: &mut Vec<u8>, mutation: &Mutation) {
    let len = document.len().max(1);
    match *mutation {
        Mutation::Set(at, b) => {
            if let Some(byte) = document.get_mut(at % len) {
                *byte = b;
            }
        }
        Mutation::Remove(at, n) => {
            let start = (at % len).min(document.len());
            let end = start.saturating_add(n).min(document.len());
            document.drain(start..end);
        }
        Mutation::Repeat(at, n) => {
            let start = (at % len).min(document.len());
            let end = start.saturating_add(n).min(document.len());
            let copy = document[start..end].to_vec();
            document.splice(end..end, copy);
        }
        Mutation::Insert(at, s) => {
            let at = (at % len).min(document.len());
            document.splice(at..at, s.bytes());
        }
    }
}

/// What every token that parses must satisfy, whatever the input.
fn assert_valid(tokens: &[Token]) {
    for t in tokens {
        assert!(!t.serial.is_empty() && t.serial.len() <= 64);
        assert!(SECRET_BYTES.contains(&t.secret.len()));
        assert!((6..=8).contains(&t.digits));
        if let Kind::Totp { period, .. } = t.kind {
            assert!((PERIOD.min..=PERIOD.max).contains(&period));
        }
    }
}

fn assert_no_secret_in(errors: &[PskcError], confidential: &[String]) {
    for error in errors {
        let shown = format!("{error} {error:?}");
        // A value of one to three bytes (a short MAC key) is two to six
        // characters, which any message may hold by chance: a serial
        // "00-0" holds the hex of the key [0]. Such values are not looked
        // for; every secret and key of a usable length is.
        for text in confidential.iter().filter(|t| t.len() >= 8) {
            assert!(!shown.contains(text.as_str()), "{shown} shows a secret");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        key in any::<[u8; 16]>(),
    ) {
        let key = PreSharedKey(Zeroizing::new(key));
        for psk in [None, Some(&key)] {
            if let Ok(tokens) = parse(&bytes, psk) {
                assert_valid(&tokens);
            }
        }
    }

    #[test]
    fn generated_files_read_back_exactly(specs in specs(), protection in protection()) {
        let document = document(&specs, protection.as_ref());
        let key = protection.as_ref().map(|p| PreSharedKey::from_hex(&p.hex()).expect("hex"));
        let tokens = parse(document.as_bytes(), key.as_ref()).expect("a valid file");
        prop_assert_eq!(tokens.len(), specs.len());
        for (token, spec) in tokens.iter().zip(&specs) {
            prop_assert_eq!(&token.serial, &spec.serial);
            prop_assert_eq!(token.secret.as_slice(), spec.secret.as_slice());
            prop_assert_eq!(token.digits, spec.digits);
            prop_assert_eq!(token.algorithm, spec.algorithm);
            prop_assert_eq!(token.kind, spec.kind);
            prop_assert_eq!(token.manufacturer.as_deref(), Some("Feitian"));
            prop_assert_eq!(token.model.as_deref(), Some("c200"));
        }
    }

    #[test]
    fn a_wrong_key_never_reads_an_encrypted_file(
        specs in specs(),
        protection in protection().prop_filter("encrypted", Option::is_some),
        wrong in any::<[u8; 16]>(),
    ) {
        let protection = protection.expect("filtered");
        prop_assume!(wrong != protection.psk);
        let document = document(&specs, Some(&protection));
        let wrong = PreSharedKey(Zeroizing::new(wrong));
        let errors = parse(document.as_bytes(), Some(&wrong)).expect_err("wrong key");
        prop_assert_eq!(&errors, &vec![PskcError::WrongKey]);
        let errors = parse(document.as_bytes(), None).expect_err("no key");
        prop_assert_eq!(
            &errors,
            &vec![PskcError::KeyNeeded { key_name: Some("Pre-shared-key".into()) }]
        );
    }

    #[test]
    fn damaged_files_never_panic_or_show_a_secret(
        specs in specs(),
        protection in protection(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = document(&specs, protection.as_ref()).into_bytes();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        let key = protection.as_ref().map(|p| PreSharedKey::from_hex(&p.hex()).expect("hex"));
        match parse(&bytes, key.as_ref()) {
            Ok(tokens) => assert_valid(&tokens),
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                assert_no_secret_in(&errors, &confidential(&specs, protection.as_ref()));
            }
        }
    }

    #[test]
    fn invalid_values_are_refused_without_showing_them(
        specs in specs(),
        protection in protection(),
        short in proptest::collection::vec(any::<u8>(), 8..*SECRET_BYTES.start()),
        index in any::<prop::sample::Index>(),
    ) {
        // One token's secret too short: refused by its serial, and neither
        // that secret nor any other is shown.
        let mut specs = specs;
        let victim = index.index(specs.len());
        specs[victim].secret = short;
        let document = document(&specs, protection.as_ref());
        let key = protection.as_ref().map(|p| PreSharedKey::from_hex(&p.hex()).expect("hex"));
        let errors = parse(document.as_bytes(), key.as_ref()).expect_err("short secret");
        prop_assert_eq!(errors.len(), 1);
        let expected_prefix = format!("serial {}: its secret has", specs[victim].serial);
        prop_assert!(errors[0].to_string().starts_with(&expected_prefix));
        assert_no_secret_in(&errors, &confidential(&specs, protection.as_ref()));
    }
}
