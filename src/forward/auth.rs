//! Basic proxy authentication: the credentials a forward listener accepts
//! and the check of a request's `Proxy-Authorization` field.
//!
//! The field's token is decoded (base64 crate) into a fixed stack buffer, so
//! an over-long value (decoded beyond [`MAX_DECODED`]) is refused without
//! allocating; the decoded `user:password` is compared with every accepted
//! credential in constant time, so the time taken says nothing about how much
//! of a guess was right. Credentials are never formatted into logs: their
//! `Debug` prints only the user names' count.

use base64::Engine;

/// The longest decoded `user:password` considered.
pub const MAX_DECODED: usize = 1024;

/// The accepted `user:password` pairs.
#[derive(Clone, Default)]
pub struct Credentials {
    pairs: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} entries)", self.pairs.len())
    }
}

/// Check one `USER:PASS` value: a non-empty user, no control characters.
pub fn parse_credential(s: &str) -> Result<Vec<u8>, String> {
    let Some((user, _)) = s.split_once(':') else {
        return Err("expected USER:PASSWORD (no ':' found)".into());
    };
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if s.len() > MAX_DECODED || s.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!(
            "a credential must be at most {MAX_DECODED} bytes without control characters"
        ));
    }
    Ok(s.as_bytes().to_vec())
}

/// Read an auth file: one `user:password` per line, `#` comments and blank
/// lines ignored, a leading byte-order mark (some editors write one) too.
/// An error names the line.
pub fn parse_file(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_credential(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the compiler from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

impl Credentials {
    pub fn new(pairs: Vec<Vec<u8>>) -> Credentials {
        Credentials { pairs }
    }

    /// No credentials: the listener is open (no auth asked).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Does this `Proxy-Authorization` value carry accepted credentials?
    pub fn check(&self, value: &[u8]) -> bool {
        let value = value.trim_ascii();
        let Some(scheme_end) = value.iter().position(|&b| b == b' ') else {
            return false;
        };
        if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let token = value[scheme_end..].trim_ascii();
        if token.len() > MAX_DECODED * 4 / 3 + 4 {
            return false;
        }
        let mut buf = [0u8; MAX_DECODED];
        let Ok(n) = base64::engine::general_purpose::STANDARD.decode_slice(token, &mut buf) else {
            return false;
        };
        let decoded = &buf[..n];
        let mut ok = false;
        for pair in &self.pairs {
            ok |= ct_eq(pair, decoded);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(vec![b"alice:s3cret".to_vec(), b"bob:pa:ss".to_vec()])
    }

    fn basic(s: &str) -> Vec<u8> {
        let t = base64::engine::general_purpose::STANDARD.encode(s);
        format!("Basic {t}").into_bytes()
    }

    #[test]
    fn accepts_only_listed_pairs() {
        let c = creds();
        assert!(c.check(&basic("alice:s3cret")));
        assert!(c.check(&basic("bob:pa:ss")));
        assert!(c.check(b"  basic   YWxpY2U6czNjcmV0 "));
        assert!(!c.check(&basic("alice:s3cre")));
        assert!(!c.check(&basic("alice:s3cretx")));
        assert!(!c.check(&basic("mallory:s3cret")));
        assert!(!c.check(b"Bearer YWxpY2U6czNjcmV0"));
        assert!(!c.check(b"Basic !!!notbase64"));
        assert!(!c.check(b"Basic"));
        assert!(!c.check(b""));
    }

    #[test]
    fn over_long_values_are_refused() {
        let long = "a:".to_string() + &"x".repeat(2000);
        let c = Credentials::new(vec![long.clone().into_bytes()]);
        assert!(!c.check(&basic(&long)));
    }

    #[test]
    fn auth_files_report_the_bad_line() {
        let ok = parse_file("# users\nalice:one\n\n  bob:two  \n").unwrap();
        assert_eq!(ok, [b"alice:one".to_vec(), b"bob:two".to_vec()]);
        let e = parse_file("alice:one\nnocolon\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_file(":nouser").unwrap_err().contains("empty"));
        let bom = parse_file("\u{feff}alice:one\r\n").unwrap();
        assert_eq!(bom, [b"alice:one".to_vec()]);
    }

    #[test]
    fn debug_hides_the_secrets() {
        let s = format!("{:?}", creds());
        assert!(!s.contains("s3cret") && !s.contains("alice"), "{s}");
    }

    /// Any change to a good value's credentials is refused, and no value
    /// panics the check, however long or malformed.
    #[test]
    fn fuzzed_credentials_never_panic_and_only_the_exact_pair_passes() {
        let c = creds();
        let good = basic("alice:s3cret");
        let mut state = 0x0dd_c0ffee_u64;
        let mut rng = || crate::test_rng::next(&mut state);
        const BYTES: &[u8] = b"=+/ \t\0:A\xff\xc3aZ9";
        for _ in 0..20000 {
            let mut v = good.clone();
            for _ in 0..1 + rng() % 3 {
                let i = (rng() as usize) % v.len();
                match rng() % 4 {
                    0 => v[i] = BYTES[(rng() as usize) % BYTES.len()],
                    1 => v.insert(i, BYTES[(rng() as usize) % BYTES.len()]),
                    2 => {
                        v.remove(i);
                    }
                    _ => v.extend(std::iter::repeat_n(b'Q', (rng() % 3000) as usize)),
                }
            }
            let passes = c.check(&v);
            // The model: scheme, space, the token, any surrounding spaces.
            let text = String::from_utf8_lossy(&v)
                .trim_matches([' ', '\t', '\n', '\r'])
                .to_string();
            let model = text
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                .and_then(|(_, token)| {
                    base64::engine::general_purpose::STANDARD
                        .decode(token.trim_matches([' ', '\t', '\n', '\r']))
                        .ok()
                })
                .is_some_and(|d| d == b"alice:s3cret" || d == b"bob:pa:ss");
            assert_eq!(passes, model, "{:?}", String::from_utf8_lossy(&v));
        }
    }
}
