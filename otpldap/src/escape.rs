//! A user name made safe for the places `{user}` stands in: an attribute
//! value of a DN (RFC 4514) and an assertion value of a search filter
//! (RFC 4515). Whatever the name holds, the escaped text is one value: it
//! cannot end the value, start another attribute or RDN, or add a filter
//! term, so the DN or filter keeps the structure of its template.

use std::fmt::Write;

/// Writes each UTF-8 byte of `c` as `\xx` (two lower-case hex digits), the
/// escape that both DNs and filters take for any byte.
fn push_hex(out: &mut String, c: char) {
    let mut buffer = [0u8; 4];
    for byte in c.encode_utf8(&mut buffer).bytes() {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\{byte:02x}");
    }
}

/// `value` as an attribute value in a DN (RFC 4514 section 2.4): `"`, `+`,
/// `,`, `;`, `<`, `>`, `\` and `=` anywhere, `#` or a space at the start
/// and a space at the end are written after a backslash; NUL and the other
/// control characters as `\xx` per byte. Everything else stays as it is.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for (at, c) in value.char_indices() {
        let first = at == 0;
        let last = at + c.len_utf8() == value.len();
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if first => out.push_str("\\#"),
            ' ' if first || last => out.push_str("\\ "),
            c if c.is_control() => push_hex(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// `value` as an assertion value in a search filter (RFC 4515 section 3):
/// `*`, `(`, `)`, `\`, NUL and the other control characters as `\xx` per
/// byte. Everything else stays as it is.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if matches!(c, '*' | '(' | ')' | '\\') || c.is_control() {
            push_hex(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `template` with every `{user}` replaced by `escaped`.
pub(crate) fn fill(template: &str, escaped: &str) -> String {
    template.replace("{user}", escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{StructureTag, PL};
    use proptest::prelude::*;

    #[test]
    fn dn_values_escape_what_rfc_4514_names() {
        for (value, escaped) in [
            ("alice", "alice"),
            ("a,ou=x", "a\\,ou\\=x"),
            ("a+cn=b", "a\\+cn\\=b"),
            ("\"q\";<x>", "\\\"q\\\"\\;\\<x\\>"),
            ("back\\slash", "back\\\\slash"),
            ("#hash#", "\\#hash#"),
            (" both ", "\\ both\\ "),
            (" ", "\\ "),
            ("a b", "a b"),
            ("nul\0", "nul\\00"),
            ("tab\tnl\n", "tab\\09nl\\0a"),
            ("c1\u{85}", "c1\\c2\\85"),
            ("*()", "*()"),
            ("ユーザー", "ユーザー"),
            ("", ""),
        ] {
            assert_eq!(dn_value(value), escaped, "{value:?}");
        }
    }

    #[test]
    fn filter_values_escape_what_rfc_4515_names() {
        for (value, escaped) in [
            ("alice", "alice"),
            ("*", "\\2a"),
            ("admin)(uid=*", "admin\\29\\28uid=\\2a"),
            ("a\\b", "a\\5cb"),
            ("nul\0", "nul\\00"),
            ("nl\r\n", "nl\\0d\\0a"),
            ("a,ou=x+y#", "a,ou=x+y#"),
            (" spaced ", " spaced "),
            ("ユーザー", "ユーザー"),
        ] {
            assert_eq!(filter_value(value), escaped, "{value:?}");
        }
    }

    #[test]
    fn fill_replaces_every_placeholder() {
        assert_eq!(
            fill("(|(uid={user})(mail={user}))", "a\\2a"),
            "(|(uid=a\\2a)(mail=a\\2a))"
        );
    }

    /// An RDN: its attribute types and values.
    type Rdn = Vec<(String, Vec<u8>)>;

    /// The attribute-value pairs of a DN, RDN by RDN, read by the rules of
    /// RFC 4514: `\` and two hex digits is a byte, `\` and another
    /// character is that character; an unescaped `,` ends an RDN, `+` a
    /// pair, the first `=` of a pair ends its type. `None` when the DN
    /// breaks those rules: an unescaped special character, or a space or
    /// `#` where a value may not start or end unescaped.
    fn parse_dn(dn: &str) -> Option<Vec<Rdn>> {
        let bytes = dn.as_bytes();
        let mut rdns = vec![vec![]];
        let (mut attribute, mut value) = (None::<String>, Vec::new());
        // Where the value's last escaped byte ends, to tell an escaped
        // trailing space from a bare one.
        let mut escaped_until = 0;
        let mut at = 0;
        let end_pair = |attribute: &mut Option<String>, value: &mut Vec<u8>, escaped: bool| {
            let attribute = attribute.take()?;
            let bare_end = !escaped && value.last() == Some(&b' ');
            (!bare_end).then(|| (attribute, std::mem::take(value)))
        };
        while at < bytes.len() {
            let b = bytes[at];
            match (b, &attribute) {
                (b'\\', Some(_)) => {
                    let next = *bytes.get(at + 1)?;
                    let hex = bytes
                        .get(at + 1..at + 3)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(byte) => {
                            value.push(byte);
                            at += 3;
                        }
                        None if b"\"+,;<>\\=# ".contains(&next) => {
                            value.push(next);
                            at += 2;
                        }
                        None => return None,
                    }
                    escaped_until = value.len();
                    continue;
                }
                (b'=', None) => {
                    attribute = Some(String::from_utf8(value.clone()).ok()?);
                    value.clear();
                    escaped_until = 0;
                }
                (b',' | b'+', Some(_)) => {
                    let escaped = escaped_until == value.len() && !value.is_empty();
                    let pair = end_pair(&mut attribute, &mut value, escaped)?;
                    rdns.last_mut()?.push(pair);
                    if b == b',' {
                        rdns.push(vec![]);
                    }
                    escaped_until = 0;
                }
                (b'"' | b';' | b'<' | b'>' | b'=' | 0, Some(_)) => return None,
                (b' ' | b'#', Some(_)) if value.is_empty() && escaped_until == 0 => return None,
                _ => value.push(b),
            }
            at += 1;
        }
        let escaped = escaped_until == value.len() && !value.is_empty();
        let pair = end_pair(&mut attribute, &mut value, escaped)?;
        rdns.last_mut()?.push(pair);
        Some(rdns)
    }

    #[test]
    fn the_test_dn_reader_reads_by_the_rules() {
        let read = parse_dn("uid=a\\2Cb\\+c,ou=people").expect("a DN");
        assert_eq!(
            read,
            vec![
                vec![("uid".to_owned(), b"a,b+c".to_vec())],
                vec![("ou".to_owned(), b"people".to_vec())]
            ]
        );
        assert_eq!(parse_dn("uid=a+cn=b,ou=x").map(|r| r[0].len()), Some(2));
        assert_eq!(
            parse_dn("uid=\\+ab").map(|r| r[0][0].1.clone()),
            Some(b"+ab".to_vec()),
            "a sign is no hex digit"
        );
        for broken in [
            "uid=a;b", "uid= a", "uid=a ", "uid=#a", "uid=a\\", "uid=a\\q",
        ] {
            assert_eq!(parse_dn(broken), None, "{broken}");
        }
        assert!(parse_dn("uid=a\\ ").is_some());
    }

    /// A filter's shape (tag classes and numbers, nesting) with every
    /// primitive's bytes pulled out, in order.
    fn filter_shape(tag: &StructureTag, leaves: &mut Vec<Vec<u8>>) -> String {
        match &tag.payload {
            PL::P(bytes) => {
                leaves.push(bytes.clone());
                format!("{:?}{}", tag.class, tag.id)
            }
            PL::C(children) => {
                let inner: Vec<String> = children.iter().map(|c| filter_shape(c, leaves)).collect();
                format!("{:?}{}[{}]", tag.class, tag.id, inner.join(" "))
            }
        }
    }

    fn read_filter(filter: &str) -> Option<(String, Vec<Vec<u8>>)> {
        use ldap3::asn1::ASNTag;
        let tag = ldap3::parse_filter(filter).ok()?.into_structure();
        let mut leaves = Vec::new();
        let shape = filter_shape(&tag, &mut leaves);
        Some((shape, leaves))
    }

    #[test]
    fn injected_filter_terms_stay_one_value() {
        let template = "(&(objectClass=person)(uid={user}))";
        let (shape, _) = read_filter(&fill(template, "x")).expect("the template");
        for name in [
            "*",
            "admin)(uid=*",
            "a*",
            "x)(|(objectClass=*)",
            "\\2a",
            "\0",
        ] {
            let filter = fill(template, &filter_value(name));
            let (read_shape, leaves) = read_filter(&filter).expect(name);
            assert_eq!(read_shape, shape, "{name:?}");
            assert_eq!(leaves.last(), Some(&name.as_bytes().to_vec()), "{name:?}");
        }
    }

    proptest! {
        #[test]
        fn any_user_name_is_one_dn_value(name in any::<String>()) {
            let template = "uid={user},ou=people,dc=example,dc=com";
            let dn = fill(template, &dn_value(&name));
            let rdns = parse_dn(&dn);
            prop_assert!(rdns.is_some(), "{dn:?} breaks the DN rules");
            let rdns = rdns.unwrap_or_default();
            prop_assert_eq!(rdns.len(), 4);
            prop_assert_eq!(&rdns[0], &vec![("uid".to_owned(), name.as_bytes().to_vec())]);
            prop_assert_eq!(&rdns[1], &vec![("ou".to_owned(), b"people".to_vec())]);
        }

        #[test]
        fn special_characters_are_one_dn_value(name in "[ #,+\"\\\\<>;=a\\x00]{0,12}") {
            let dn = fill("cn={user}+uid=x,dc=example", &dn_value(&name));
            let rdns = parse_dn(&dn);
            prop_assert!(rdns.is_some(), "{dn:?} breaks the DN rules");
            let rdns = rdns.unwrap_or_default();
            prop_assert_eq!(rdns.len(), 2);
            prop_assert_eq!(&rdns[0], &vec![
                ("cn".to_owned(), name.as_bytes().to_vec()),
                ("uid".to_owned(), b"x".to_vec()),
            ]);
        }

        #[test]
        fn any_user_name_is_one_filter_value(name in any::<String>()) {
            let template = "(&(objectClass=person)(|(uid={user})(mail={user})))";
            let (shape, _) = read_filter(&fill(template, "x")).unwrap_or_default();
            let filter = fill(template, &filter_value(&name));
            let read = read_filter(&filter);
            prop_assert!(read.is_some(), "{filter:?} does not parse");
            let (read_shape, leaves) = read.unwrap_or_default();
            prop_assert_eq!(read_shape, shape);
            let value = name.as_bytes().to_vec();
            prop_assert_eq!(leaves, vec![
                b"objectClass".to_vec(), b"person".to_vec(),
                b"uid".to_vec(), value.clone(),
                b"mail".to_vec(), value,
            ]);
        }

        #[test]
        fn filter_specials_are_one_filter_value(name in "[*()\\\\=a\\x00 ]{0,12}") {
            let (shape, _) = read_filter("(uid=x)").unwrap_or_default();
            let read = read_filter(&fill("(uid={user})", &filter_value(&name)));
            prop_assert!(read.is_some());
            let (read_shape, leaves) = read.unwrap_or_default();
            prop_assert_eq!(read_shape, shape);
            prop_assert_eq!(leaves, vec![b"uid".to_vec(), name.as_bytes().to_vec()]);
        }
    }
}
