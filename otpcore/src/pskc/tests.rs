//! The example documents of RFC 6030 and the ways a seed file is refused.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::BlockEncryptMut;

use super::*;

/// The RFC 6030 examples' pre-shared key (section 6.1.1).
const RFC_PSK: &str = "12345678901234567890123456789012";
/// The secret of the RFC 6030 examples, base64 of "12345678901234567890".
const RFC_SECRET: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=";
const NS: &str = r#"xmlns="urn:ietf:params:xml:ns:keyprov:pskc""#;
const NS_ENC: &str = r#"xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#""#;

fn psk(hex: &str) -> PreSharedKey {
    PreSharedKey::from_hex(hex).expect("a key")
}

fn parse_ok(document: &str, key: Option<&PreSharedKey>) -> Vec<Token> {
    match parse(document.as_bytes(), key) {
        Ok(tokens) => tokens,
        Err(errors) => panic!("{errors:?}"),
    }
}

/// The messages of a refused document.
fn refused(document: &str, key: Option<&PreSharedKey>) -> Vec<String> {
    match parse(document.as_bytes(), key) {
        Ok(tokens) => panic!("accepted: {tokens:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_refused(document: &str, key: Option<&PreSharedKey>, wanted: &[&str]) {
    let errors = refused(document, key);
    assert_eq!(errors.len(), wanted.len(), "{errors:?}");
    for (error, part) in errors.iter().zip(wanted) {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
}

/// One plain key package.
fn package(serial: &str, algorithm: &str, parameters: &str, data: &str) -> String {
    format!(
        r#"<KeyPackage>
  <DeviceInfo><Manufacturer>Acme</Manufacturer><SerialNo>{serial}</SerialNo></DeviceInfo>
  <Key Id="k{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:{algorithm}">
    <AlgorithmParameters>{parameters}</AlgorithmParameters>
    <Data><Secret><PlainValue>{RFC_SECRET}</PlainValue></Secret>{data}</Data>
  </Key>
</KeyPackage>"#
    )
}

fn container(packages: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><KeyContainer Version="1.0" {NS}>{packages}</KeyContainer>"#
    )
}

const SIX: &str = r#"<ResponseFormat Length="6" Encoding="DECIMAL"/>"#;
const EIGHT: &str = r#"<ResponseFormat Length="8" Encoding="DECIMAL"/>"#;

/// RFC 6030 figure 3: a plain HOTP key with supplementary data.
const FIGURE_3: &str = include_str!("rfc6030-figure3.xml");

/// RFC 6030 figure 6: the secret, and the MAC key, encrypted with the
/// pre-shared key.
const FIGURE_6: &str = include_str!("rfc6030-figure6.xml");

#[test]
fn rfc6030_figure_3_plain_hotp() {
    let tokens = parse_ok(FIGURE_3, None);
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(t.serial, "987654321");
    assert_eq!(t.manufacturer.as_deref(), Some("Manufacturer"));
    assert_eq!(t.model, None);
    assert_eq!(t.kind, Kind::Hotp { counter: 0 });
    assert_eq!(t.algorithm, Algorithm::Sha1);
    assert_eq!(t.digits, 8);
    assert_eq!(t.secret.as_slice(), b"12345678901234567890");
}

#[test]
fn rfc6030_figure_6_pre_shared_key_with_encrypted_mac_key() {
    let tokens = parse_ok(FIGURE_6, Some(&psk(RFC_PSK)));
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(t.serial, "987654321");
    assert_eq!(t.kind, Kind::Hotp { counter: 0 });
    assert_eq!(t.digits, 8);
    assert_eq!(t.secret.as_slice(), b"12345678901234567890");
    // The key's text may be upper case and surrounded by white space.
    let upper = psk(&format!(" {}\n", RFC_PSK.to_uppercase()));
    assert_eq!(parse_ok(FIGURE_6, Some(&upper)).len(), 1);
}

#[test]
fn a_wrong_pre_shared_key_is_detected_and_nothing_is_returned() {
    let wrong = psk("12345678901234567890123456789013");
    assert_eq!(
        parse(FIGURE_6.as_bytes(), Some(&wrong)).err(),
        Some(vec![PskcError::WrongKey])
    );
    assert_eq!(
        PskcError::WrongKey.to_string(),
        "wrong pre-shared key or damaged file"
    );
    // No key at all: named as the file names it.
    assert_refused(
        FIGURE_6,
        None,
        &[r#"encrypted with a pre-shared key (named "Pre-shared-key"), and none was given"#],
    );
}

#[test]
fn a_damaged_value_or_mac_is_a_wrong_key() {
    let key = psk(RFC_PSK);
    // A changed ciphertext no longer matches its MAC.
    let damaged = FIGURE_6.replace("AAECAwQFBgcICQoLDA0OD+cI", "AAECAwQFBgcICQoLDA0OD+cJ");
    assert_eq!(
        parse(damaged.as_bytes(), Some(&key)).err(),
        Some(vec![PskcError::WrongKey])
    );
    let damaged = FIGURE_6.replace(
        "Su+NvtQfmvfJzF6bmQiJqoLRExc=",
        "Tu+NvtQfmvfJzF6bmQiJqoLRExc=",
    );
    assert_eq!(
        parse(damaged.as_bytes(), Some(&key)).err(),
        Some(vec![PskcError::WrongKey])
    );
    // A damaged MAC key fails its padding (or, rarely, every MAC).
    let damaged = FIGURE_6.replace("ESIzRFVmd4iZABEiM0RVZgKn", "ESIzRFVmd4iZABEiM0RVZgKo");
    assert_eq!(
        parse(damaged.as_bytes(), Some(&key)).err(),
        Some(vec![PskcError::WrongKey])
    );
}

#[test]
fn a_bad_padding_behind_a_good_mac_is_a_wrong_key() {
    // Encrypt-then-MAC with a correct MAC over a ciphertext whose padding
    // is wrong: the MAC passes, the decryption does not.
    let key = [7u8; 16];
    let mac_key = [9u8; 20];
    let iv = [1u8; 16];
    let mut block = [0x42u8; 16];
    cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &iv)
        .expect("key")
        .encrypt_padded_mut::<NoPadding>(&mut block, 16)
        .expect("one block");
    let mut cipher = iv.to_vec();
    cipher.extend_from_slice(&block);
    let mut mac = Hmac::<Sha1>::new_from_slice(&mac_key).expect("key");
    mac.update(&cipher);
    let mac = mac.finalize().into_bytes();
    let encrypted_mac_key = proptests::encrypt(&key, &[3u8; 16], &mac_key);
    let document = format!(
        r#"<KeyContainer Version="1.0" {NS_ENC}>
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <MACKey><xenc:EncryptionMethod Algorithm="{AES128_CBC}"/>
      <xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></MACKey>
  </MACMethod>
  <KeyPackage><DeviceInfo><SerialNo>1</SerialNo></DeviceInfo>
    <Key Algorithm="{HOTP}"><AlgorithmParameters>{SIX}</AlgorithmParameters>
      <Data><Secret><EncryptedValue><xenc:EncryptionMethod Algorithm="{AES128_CBC}"/>
        <xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData>
      </EncryptedValue><ValueMAC>{}</ValueMAC></Secret></Data></Key></KeyPackage>
</KeyContainer>"#,
        data_encoding::BASE64.encode(&encrypted_mac_key),
        data_encoding::BASE64.encode(&cipher),
        data_encoding::BASE64.encode(&mac),
    );
    let hex = data_encoding::HEXLOWER.encode(&key);
    assert_eq!(
        parse(document.as_bytes(), Some(&psk(&hex))).err(),
        Some(vec![PskcError::WrongKey])
    );
}

#[test]
fn the_older_form_keys_the_mac_with_the_pre_shared_key() {
    // The same secret as figure 6, with the MAC keyed by the pre-shared key
    // itself and no MACKey element.
    let key = psk(RFC_PSK);
    let cipher = data_encoding::BASE64
        .decode(b"AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv")
        .expect("base64");
    let mut mac = Hmac::<Sha1>::new_from_slice(key.0.as_slice()).expect("key");
    mac.update(&cipher);
    let mac = data_encoding::BASE64.encode(&mac.finalize().into_bytes());
    let start = FIGURE_6.find("<MACKey>").expect("MACKey");
    let end = FIGURE_6.find("</MACKey>").expect("MACKey") + "</MACKey>".len();
    let older = format!("{}{}", &FIGURE_6[..start], &FIGURE_6[end..])
        .replace("Su+NvtQfmvfJzF6bmQiJqoLRExc=", &mac);
    let tokens = parse_ok(&older, Some(&key));
    assert_eq!(tokens[0].secret.as_slice(), b"12345678901234567890");
    // Without any MACMethod, encrypted values cannot be checked: refused.
    let start = older.find("<MACMethod").expect("MACMethod");
    let end = older.find("</MACMethod>").expect("MACMethod") + "</MACMethod>".len();
    let unchecked = format!("{}{}", &older[..start], &older[end..]);
    assert_refused(&unchecked, Some(&key), &["no MACMethod"]);
}

#[test]
fn rfc6030_figure_7_password_based_keys_are_refused() {
    let document = format!(
        r##"<pskc:KeyContainer xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"
  xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
  xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">
  <pskc:EncryptionKey>
    <xenc11:DerivedKey>
      <xenc11:KeyDerivationMethod
        Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
        <pkcs5:PBKDF2-params>
          <Salt><Specified>Ej7/PEpyEpw=</Specified></Salt>
          <IterationCount>1000</IterationCount>
          <KeyLength>16</KeyLength>
          <PRF/>
        </pkcs5:PBKDF2-params>
      </xenc11:KeyDerivationMethod>
      <xenc:ReferenceList><xenc:DataReference URI="#ED"/></xenc:ReferenceList>
      <xenc11:MasterKeyName>My Password 1</xenc11:MasterKeyName>
    </xenc11:DerivedKey>
  </pskc:EncryptionKey>
  <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <pskc:MACKey>
      <xenc:EncryptionMethod Algorithm="{AES128_CBC}"/>
      <xenc:CipherData><xenc:CipherValue>
2GTTnLwM3I4e5IO5FkufoOEiOhNj91fhKRQBtBJYluUDsPOLTfUvoU2dStyOwYZx
      </xenc:CipherValue></xenc:CipherData>
    </pskc:MACKey>
  </pskc:MACMethod>
  <pskc:KeyPackage>
    <pskc:DeviceInfo>
      <pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer>
      <pskc:SerialNo>987654321</pskc:SerialNo>
    </pskc:DeviceInfo>
    <pskc:Key Algorithm="{HOTP}" Id="123456">
      <pskc:AlgorithmParameters>
        <pskc:ResponseFormat Length="8" Encoding="DECIMAL"/>
      </pskc:AlgorithmParameters>
      <pskc:Data><pskc:Secret>
        <pskc:EncryptedValue Id="ED">
          <xenc:EncryptionMethod Algorithm="{AES128_CBC}"/>
          <xenc:CipherData><xenc:CipherValue>
oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f
          </xenc:CipherValue></xenc:CipherData>
        </pskc:EncryptedValue>
        <pskc:ValueMAC>LP6xMvjtypbfT9PdkJhBZ+D6O4w=</pskc:ValueMAC>
      </pskc:Secret></pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>"##
    );
    for key in [None, Some(&psk(RFC_PSK))] {
        assert_refused(&document, key, &["derived from a password (PBKDF2)"]);
    }
}

#[test]
fn rfc6030_figure_8_asymmetric_encryption_is_refused() {
    let with_certificate = format!(
        r#"<KeyContainer Version="1.0" {NS_ENC}>
  <EncryptionKey><ds:X509Data><ds:X509Certificate>MIIB5zCCAVCgAwIBAgIESZp/vDANBgkqhkiG9w0BAQUFADA4</ds:X509Certificate></ds:X509Data></EncryptionKey>
  <KeyPackage>
    <DeviceInfo><Manufacturer>TokenVendorAcme</Manufacturer><SerialNo>987654321</SerialNo></DeviceInfo>
    <Key Id="MBK000000001" Algorithm="{HOTP}">
      <AlgorithmParameters>{SIX}</AlgorithmParameters>
      <Data><Secret><EncryptedValue>
        <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa_1_5"/>
        <xenc:CipherData><xenc:CipherValue>hJ+fvpoMPMO9BYpK2rdyQYGIxiATYHTHC7e/sPLKYo5/r1v+4</xenc:CipherValue></xenc:CipherData>
      </EncryptedValue></Secret><Counter><PlainValue>0</PlainValue></Counter></Data>
    </Key>
  </KeyPackage>
</KeyContainer>"#
    );
    assert_refused(&with_certificate, None, &["asymmetric key (a certificate"]);
    // The value's own method names RSA even without the certificate.
    let start = with_certificate.find("<EncryptionKey>").expect("key");
    let end = with_certificate.find("</EncryptionKey>").expect("key") + "</EncryptionKey>".len();
    let bare = format!("{}{}", &with_certificate[..start], &with_certificate[end..]);
    assert_refused(
        &bare,
        Some(&psk(RFC_PSK)),
        &["serial 987654321: encryption to an asymmetric key"],
    );
}

#[test]
fn rfc6030_figure_5_pin_keys_and_a_shared_serial_are_refused_by_serial() {
    let pin_policy = r#"<Policy><PINPolicy MinLength="4" MaxLength="4" PINKeyId="123456781"
        PINEncoding="DECIMAL" PINUsageMode="Local"/><KeyUsage>OTP</KeyUsage></Policy>"#;
    let hotp_key = package(
        "987654321",
        "hotp",
        EIGHT,
        "<Counter><PlainValue>0</PlainValue></Counter>",
    )
    .replace("</Data>", &format!("</Data>{pin_policy}"));
    // A PIN the token checks itself is no concern here.
    assert_eq!(parse_ok(&container(&hotp_key), None)[0].digits, 8);
    let pin_key = package(
        "987654321",
        "pin",
        r#"<ResponseFormat Length="4" Encoding="DECIMAL"/>"#,
        "",
    );
    assert_refused(
        &container(&format!("{hotp_key}{pin_key}")),
        None,
        &[
            "serial 987654321: also in key package 1: serial numbers must be unique",
            r#"serial 987654321: algorithm "urn:ietf:params:xml:ns:keyprov:pskc:pin" is not supported: only HOTP and TOTP are"#,
        ],
    );
    let server_pin = hotp_key.replace(r#"PINUsageMode="Local""#, r#"PINUsageMode="Prepend""#);
    assert_refused(
        &container(&server_pin),
        None,
        &["serial 987654321: a PIN checked by the server"],
    );
}

#[test]
fn rfc6030_figures_2_and_4_lack_what_a_token_needs() {
    // Figure 2: no DeviceInfo, and a 4-byte secret.
    let figure_2 = format!(
        r#"<KeyContainer Version="1.0" Id="exampleID1" {NS}><KeyPackage>
  <Key Id="12345678" Algorithm="{HOTP}"><Issuer>Issuer-A</Issuer>
    <Data><Secret><PlainValue>MTIzNA==
    </PlainValue></Secret></Data></Key></KeyPackage></KeyContainer>"#
    );
    assert_refused(&figure_2, None, &["key package 1: no DeviceInfo SerialNo"]);
    let with_serial = figure_2.replace(
        "<KeyPackage>",
        "<KeyPackage><DeviceInfo><SerialNo>42</SerialNo></DeviceInfo>",
    );
    assert_refused(&with_serial, None, &["serial 42: no ResponseFormat Length"]);
    let with_length = with_serial.replace(
        "<Data>",
        &format!("<AlgorithmParameters>{SIX}</AlgorithmParameters><Data>"),
    );
    assert_refused(
        &with_length,
        None,
        &["serial 42: its secret has 4 bytes: 16 to 128 are accepted"],
    );
    // Figure 4: the key is derived from a master key, no Secret.
    let figure_4 = container(&format!(
        r#"<KeyPackage>
  <DeviceInfo><Manufacturer>Manufacturer</Manufacturer><SerialNo>987654321</SerialNo></DeviceInfo>
  <CryptoModuleInfo><Id>CM_ID_001</Id></CryptoModuleInfo>
  <Key Id="12345678" Algorithm="{HOTP}"><Issuer>Issuer</Issuer>
    <AlgorithmParameters><ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters>
    <KeyProfileId>keyProfile1</KeyProfileId>
    <KeyReference>MasterKeyLabel</KeyReference>
    <Data><Counter><PlainValue>0</PlainValue></Counter></Data>
    <Policy><KeyUsage>OTP</KeyUsage></Policy>
  </Key></KeyPackage>"#
    ));
    assert_refused(&figure_4, None, &["serial 987654321: no Secret"]);
}

#[test]
fn rfc6030_figure_10_bulk_provisioning() {
    let bulk_package = |serial: &str| {
        package(
            serial,
            "hotp",
            EIGHT,
            "<Counter><PlainValue>0</PlainValue></Counter>",
        )
        .replace(
            "</Data>",
            "</Data><Policy><StartDate>2006-05-01T00:00:00Z</StartDate>\
             <ExpiryDate>2006-05-31T00:00:00Z</ExpiryDate></Policy>",
        )
    };
    let bulk: String = ["654321", "123456", "9999999"].map(bulk_package).concat();
    let tokens = parse_ok(&container(&bulk), None);
    let serials: Vec<&str> = tokens.iter().map(|t| t.serial.as_str()).collect();
    assert_eq!(serials, ["654321", "123456", "9999999"]);
    // The RFC's figure repeats serial 9999999 for a fourth key: refused.
    let repeated = format!("{bulk}{}", bulk_package("9999999"));
    assert_refused(
        &container(&repeated),
        None,
        &["serial 9999999: also in key package 3"],
    );
}

#[test]
fn feitian_style_totp_and_hotp() {
    let document = container(&format!(
        "{}{}",
        package(
            "2600215704919",
            "totp",
            SIX,
            "<Time><PlainValue>0</PlainValue></Time>\
             <TimeInterval><PlainValue>60</PlainValue></TimeInterval>"
        ),
        package(
            "1000117803294",
            "hotp",
            SIX,
            "<Counter><PlainValue>18446744073709551615</PlainValue></Counter>"
        ),
    ))
    .replace(
        "<Manufacturer>Acme</Manufacturer>",
        "<Manufacturer>FeiTian Technology Co.,Ltd</Manufacturer><Model>c200\u{202e}\u{7f}</Model>",
    );
    let tokens = parse_ok(&document, None);
    assert_eq!(
        tokens[0].kind,
        Kind::Totp {
            period: 60,
            drift: 0
        }
    );
    assert_eq!(
        tokens[0].manufacturer.as_deref(),
        Some("FeiTian Technology Co.,Ltd")
    );
    // Hidden characters are escaped, fit to show on a terminal.
    assert_eq!(tokens[0].model.as_deref(), Some("c200\\u{202e}\\u{7f}"));
    assert_eq!(tokens[1].kind, Kind::Hotp { counter: u64::MAX });
    // TOTP without TimeInterval: 30 seconds; with TimeDrift.
    let document = container(&package(
        "7",
        "totp",
        r#"<Suite>HMAC-SHA512</Suite><ResponseFormat Length="7"/>"#,
        "<TimeDrift><PlainValue>-2</PlainValue></TimeDrift>",
    ));
    let t = &parse_ok(&document, None)[0];
    assert_eq!(
        (t.kind, t.algorithm, t.digits),
        (
            Kind::Totp {
                period: 30,
                drift: -2
            },
            Algorithm::Sha512,
            7
        )
    );
}

#[test]
fn hash_suites_are_read_in_their_usual_spellings() {
    for (suite, algorithm) in [
        ("SHA1", Algorithm::Sha1),
        ("hmac-sha1", Algorithm::Sha1),
        ("SHA-256", Algorithm::Sha256),
        ("HMAC-SHA256", Algorithm::Sha256),
        (" sha512 ", Algorithm::Sha512),
    ] {
        let document = container(&package(
            "1",
            "hotp",
            &format!("<Suite>{suite}</Suite>{SIX}"),
            "",
        ));
        assert_eq!(parse_ok(&document, None)[0].algorithm, algorithm, "{suite}");
    }
    let document = container(&package(
        "1",
        "hotp",
        &format!("<Suite>MD5</Suite>{SIX}"),
        "",
    ));
    assert_refused(
        &document,
        None,
        &["serial 1: its Suite names a hash other than"],
    );
}

#[test]
fn unsupported_token_features_are_refused_by_serial() {
    let cases: [(&str, &str, &str, &str); 11] = [
        (
            "totp",
            SIX,
            "<Time><PlainValue>1234</PlainValue></Time>",
            "its Time is 1234: only 0 is supported",
        ),
        (
            "totp",
            SIX,
            "<TimeInterval><PlainValue>10</PlainValue></TimeInterval>",
            "its TimeInterval is 10 seconds: 15 to 300",
        ),
        (
            "totp",
            SIX,
            "<TimeInterval><PlainValue>301</PlainValue></TimeInterval>",
            "its TimeInterval is 301 seconds",
        ),
        (
            "hotp",
            r#"<ResponseFormat Length="9"/>"#,
            "",
            "its ResponseFormat Length must be 6, 7 or 8",
        ),
        (
            "hotp",
            r#"<ResponseFormat Length="5"/>"#,
            "",
            "its ResponseFormat Length must be 6, 7 or 8",
        ),
        (
            "hotp",
            r#"<ResponseFormat Length="6" Encoding="HEXADECIMAL"/>"#,
            "",
            "its ResponseFormat Encoding is not DECIMAL",
        ),
        (
            "hotp",
            r#"<ResponseFormat Length="6" CheckDigits="true"/>"#,
            "",
            "codes with a check digit (CheckDigits) are not supported",
        ),
        (
            "hotp",
            &format!(r#"<ChallengeFormat Encoding="DECIMAL" Min="8" Max="8"/>{SIX}"#),
            "",
            "challenge-response keys (ChallengeFormat) are not supported",
        ),
        (
            "hotp",
            SIX,
            "<Counter><PlainValue>-1</PlainValue></Counter>",
            "its Counter is not an integer in range",
        ),
        (
            "hotp",
            SIX,
            "<Counter><PlainValue>18446744073709551616</PlainValue></Counter>",
            "its Counter is not an integer",
        ),
        (
            "OCRA-1:HOTP-SHA512-8:C-QN08",
            SIX,
            "",
            r#"algorithm "urn:ietf:params:xml:ns:keyprov:pskc:OCRA-1:HOTP-SHA512-8:C-QN08" is not supported: only HOTP and TOTP are"#,
        ),
    ];
    for (algorithm, parameters, data, wanted) in cases {
        let document = container(&package("SN-1", algorithm, parameters, data));
        assert_refused(&document, None, &[&format!("serial SN-1: {wanted}")]);
    }
    let not_otp = container(&package("5", "hotp", SIX, ""))
        .replace("</Data>", "</Data><Policy><KeyUsage>CR</KeyUsage></Policy>");
    assert_refused(
        &not_otp,
        None,
        &["serial 5: its KeyUsage does not include OTP"],
    );
    let two_keys = container(&package("6", "hotp", SIX, ""))
        .replace("</Key>", &format!(r#"</Key><Key Algorithm="{HOTP}"/>"#));
    assert_refused(
        &two_keys,
        None,
        &["serial 6: the key package holds more than one Key"],
    );
    let two_secrets = container(&package("8", "hotp", SIX, "")).replace(
        "</Secret>",
        "</Secret><Secret><PlainValue>AAAA</PlainValue></Secret>",
    );
    assert_refused(
        &two_secrets,
        None,
        &["serial 8: more than one Secret in Data"],
    );
    let not_base64 = container(&package("9", "hotp", SIX, "")).replace(RFC_SECRET, "not base64!");
    assert_refused(
        &not_base64,
        None,
        &["serial 9: its Secret PlainValue is not base64"],
    );
    let bad_serial = container(&package("a b", "hotp", SIX, ""));
    assert_refused(&bad_serial, None, &["key package 1: its SerialNo must be"]);
}

#[test]
fn other_encryption_algorithms_are_refused() {
    for (uri, wanted) in [
        (
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            "encryption algorithm \"http://www.w3.org/2001/04/xmlenc#aes256-cbc\" is not supported",
        ),
        (
            "http://www.w3.org/2001/04/xmlenc#kw-aes128",
            "encryption algorithm \"http://www.w3.org/2001/04/xmlenc#kw-aes128\" is not supported: only AES-128-CBC",
        ),
        (
            "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
            "encryption to an asymmetric key",
        ),
    ] {
        let document = FIGURE_6.replace(
            r#"<EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>"#,
            &format!(r#"<EncryptedValue><xenc:EncryptionMethod Algorithm="{uri}"/>"#),
        );
        assert_refused(
            &document,
            Some(&psk(RFC_PSK)),
            &[&format!("serial 987654321: {wanted}")],
        );
    }
    let sha256_mac = FIGURE_6.replace(
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
    );
    assert_refused(
        &sha256_mac,
        Some(&psk(RFC_PSK)),
        &["MACMethod \"http://www.w3.org/2001/04/xmldsig-more#hmac-sha256\" is not supported"],
    );
}

#[test]
fn documents_that_are_not_pskc_are_refused_whole() {
    let cases: [(&[u8], &str); 8] = [
        (b"", "not well-formed XML"),
        (b"\xff\xfe<", "not UTF-8"),
        (b"<KeyContainer", "not well-formed XML (line 1"),
        (
            b"<KeyContainer xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc:1.0\"/>",
            "not a PSKC document",
        ),
        (
            b"<other xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>",
            "not a PSKC document",
        ),
        (
            b"<KeyContainer Version=\"2.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>",
            "only version 1.0",
        ),
        (
            b"<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"/>",
            "holds no KeyPackage",
        ),
        (
            b"<?xml version=\"1.0\"?><!DOCTYPE KeyContainer [<!ENTITY a \"x\">]><KeyContainer/>",
            "document type declaration",
        ),
    ];
    for (document, wanted) in cases {
        match parse(document, None) {
            Err(errors) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(
                    errors[0].to_string().contains(wanted),
                    "{errors:?} lacks {wanted:?}"
                );
            }
            Ok(tokens) => panic!("accepted: {tokens:?}"),
        }
    }
}

#[test]
fn entity_expansion_and_size_are_bounded() {
    // The classic billion laughs: refused at its DTD, before any expansion.
    let mut laughs =
        String::from("<?xml version=\"1.0\"?><!DOCTYPE KeyContainer [<!ENTITY l0 \"ha\">");
    for n in 1..10 {
        let previous = format!("&l{};", n - 1);
        laughs.push_str(&format!("<!ENTITY l{n} \"{}\">", previous.repeat(10)));
    }
    laughs.push_str(&format!("]><KeyContainer {NS}>&l9;</KeyContainer>"));
    assert_refused(&laughs, None, &["document type declaration"]);
    // An external entity likewise.
    let external = format!(
        "<!DOCTYPE KeyContainer [<!ENTITY x SYSTEM \"file:///etc/shadow\">]><KeyContainer {NS}>&x;</KeyContainer>"
    );
    assert_refused(&external, None, &["document type declaration"]);
    // Too large: refused before parsing.
    let mut large = container("").into_bytes();
    large.resize(MAX_DOCUMENT_BYTES + 1, b' ');
    let errors = parse(&large, None).expect_err("too large");
    assert!(
        errors[0].to_string().contains("larger than 8 MiB"),
        "{errors:?}"
    );
    // Too many nodes: refused while parsing, within the size limit.
    let many = container(&"<x/>".repeat(MAX_XML_NODES as usize + 1));
    assert!(many.len() <= MAX_DOCUMENT_BYTES);
    assert_refused(&many, None, &["too many XML nodes"]);
}

#[test]
fn pre_shared_keys_are_read_from_hex_and_never_shown() {
    for bad in [
        "",
        "1234",
        "zz345678901234567890123456789012",
        "123456789012345678901234567890123",
        "12345678901234567890123456789012ab",
    ] {
        let error = PreSharedKey::from_hex(bad).expect_err(bad).to_string();
        assert_eq!(
            error,
            "the pre-shared key must be 32 hexadecimal digits (AES-128)"
        );
    }
    let key = psk(RFC_PSK);
    assert_eq!(
        key.0.as_slice(),
        &data_encoding::HEXLOWER
            .decode(RFC_PSK.as_bytes())
            .expect("hex")[..]
    );
    assert_eq!(format!("{key:?}"), "PreSharedKey(<redacted>)");
}

#[test]
fn debug_never_shows_the_secret() {
    let tokens = parse_ok(FIGURE_6, Some(&psk(RFC_PSK)));
    let shown = format!("{:?}", tokens[0]);
    assert!(
        shown.contains("987654321") && shown.contains("<redacted>"),
        "{shown}"
    );
    for secret in [
        "12345678901234567890",
        RFC_SECRET,
        "3132333435363738393031323334353637383930",
        "49, 50, 51",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
}
