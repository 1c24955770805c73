//! OpenAPI `format` checks (date-time, date, byte, uuid, ipv4/ipv6, cidr, hostname, email, uri,
//! duration, mac) with the semantics of the Go parsers Kubernetes uses; the date, duration and
//! base64 parsers are shared with the CEL library.
//!
//! Invariant: pure functions of a string; knows nothing of schemas or error reporting.

/// Checks a string against an OpenAPI `format`; formats this module does not know pass.
pub(super) fn check_format(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => parse_date_time(s).is_some(),
        "date" => parse_date(s).is_some(),
        "byte" => decode_base64(s).is_some(),
        "uuid" => is_uuid(s, None),
        "uuid3" => is_uuid(s, Some(b'3')),
        "uuid4" => is_uuid(s, Some(b'4')),
        "uuid5" => is_uuid(s, Some(b'5')),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(s),
        "hostname" => is_hostname(s),
        "email" => is_email(s),
        "uri" => is_uri(s),
        "duration" => parse_go_duration(s).is_some(),
        "mac" => is_mac(s),
        _ => true,
    }
}

pub(in crate::api) fn parse_date_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

pub(in crate::api) fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Standard, padded base64 (Go's `base64.StdEncoding`, which skips CR and LF).
pub(in crate::api) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let data: Vec<u8> = s.bytes().filter(|c| *c != b'\r' && *c != b'\n').collect();
    if !data.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let chunks = data.len() / 4;
    for (ci, chunk) in data.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && ci + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for c in &chunk[..4 - pad] {
            acc = (acc << 6) | sextet(*c)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// 32 hex digits in groups of 8-4-4-4-12, hyphens optional (kube-openapi's pattern), with the
/// version digit and RFC 4122 variant checked for the versioned formats.
fn is_uuid(s: &str, version: Option<u8>) -> bool {
    let b = s.as_bytes();
    let mut hex = [0u8; 32];
    let mut n = 0;
    let mut i = 0;
    for (g, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if g > 0 && b.get(i) == Some(&b'-') {
            i += 1;
        }
        for _ in 0..len {
            match b.get(i) {
                Some(c) if c.is_ascii_hexdigit() => {
                    hex[n] = c.to_ascii_lowercase();
                    n += 1;
                    i += 1;
                }
                _ => return false,
            }
        }
    }
    if i != b.len() {
        return false;
    }
    match version {
        None => true,
        Some(v) => hex[12] == v && (v == b'3' || matches!(hex[16], b'8' | b'9' | b'a' | b'b')),
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

/// A plain `local@domain` address, or one in angle brackets after a display name (Go's
/// `mail.ParseAddress` accepts both).
fn is_email(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(rest)) => &rest[open + 1..],
        _ => s,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>@,;:\\\"[]".contains(c);
    !local.is_empty()
        && !domain.is_empty()
        && !local.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.chars().any(bad)
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// What Go's `url.ParseRequestURI` accepts, roughly: an absolute URI with a scheme, or an
/// absolute path, without spaces or control characters.
fn is_uri(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let b = scheme.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn is_mac(s: &str) -> bool {
    // Go's net.ParseMAC: 6, 8 or 20 octets separated by ':' or '-', or dotted groups of four.
    let groups: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else {
        let g: Vec<&str> = s.split('.').collect();
        return matches!(g.len(), 3 | 4 | 10)
            && g.iter().all(|x| x.len() == 4 && x.bytes().all(|c| c.is_ascii_hexdigit()));
    };
    matches!(groups.len(), 6 | 8 | 20)
        && groups.iter().all(|x| x.len() == 2 && x.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Parses a Go `time.ParseDuration` string (`1h30m`, `-1.5s`, `300ms`, `0`) into nanoseconds.
pub(in crate::api) fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut whole: u128 = 0;
        for c in int_part.bytes() {
            whole = whole.checked_mul(10)?.checked_add(u128::from(c - b'0'))?;
            if whole > 1 << 63 {
                return None;
            }
        }
        total = total.checked_add(whole.checked_mul(unit)?)?;
        // Digits beyond nanosecond precision of the largest unit cannot change the result.
        let mut num: u128 = 0;
        let mut scale: u128 = 1;
        for c in frac_part.bytes().take(18) {
            num = num * 10 + u128::from(c - b'0');
            scale *= 10;
        }
        total = total.checked_add(num * unit / scale)?;
        if total > 1 << 63 {
            return None;
        }
    }
    if neg {
        i64::try_from(total).ok().map(|t| -t).or((total == 1 << 63).then_some(i64::MIN))
    } else {
        i64::try_from(total).ok()
    }
}
