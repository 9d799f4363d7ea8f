//! Where one request ends: the head of a request read off a plain client
//! connection, parsed with `httparse` (the parser hyper itself uses), and
//! its body's length. Only what is framed beyond doubt is framed here: a
//! HTTP/1.1 head whose body is absent or has one plain `Content-Length`.
//! Everything else (a chunked body, HTTP/1.0, `Connection: close`, an
//! upgrade, two lengths, a head that does not parse) is left to hyper,
//! which then serves the connection to its end as it always has: what
//! hyper refuses is refused with hyper's own answers, and no request is
//! framed two ways (the root of request smuggling).

/// As many headers as hyper reads by default; a head with more is hyper's.
const MAX_HEADERS: usize = 100;

/// A request's head, as the client sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'b> {
    pub method: &'b str,
    /// Path and query, as sent.
    pub target: &'b str,
    /// Bytes of the header block as the head limits count them: each
    /// name and value and 4 more (`: ` and CRLF).
    pub header_bytes: usize,
    /// Bytes of body after the head.
    pub body: u64,
    /// An `Expect` header came: the client may wait for `100 Continue`.
    pub expects: bool,
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// The head is not complete yet.
    Partial,
    /// A head of `len` bytes, framed.
    Request { head: Head<'b>, len: usize },
    /// Not framed here: hyper takes the connection from these bytes on.
    Hyper,
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    let mut body = None;
    let mut expects = false;
    let mut header_bytes = 0;
    for h in req.headers.iter() {
        header_bytes += h.name.len() + h.value.len() + 4;
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") || name.eq_ignore_ascii_case("upgrade") {
            return Parsed::Hyper;
        } else if name.eq_ignore_ascii_case("content-length") {
            match (body, length(h.value)) {
                (None, Some(n)) => body = Some(n),
                _ => return Parsed::Hyper,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let closes = h.value.split(|b| *b == b',').any(|token| {
                let token = token.trim_ascii();
                token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"upgrade")
            });
            if closes {
                return Parsed::Hyper;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expects = true;
        }
    }
    Parsed::Request {
        head: Head {
            method,
            target,
            header_bytes,
            body: body.unwrap_or(0),
            expects,
        },
        len,
    }
}

/// A `Content-Length` value: digits only, at most 18 of them (no sign,
/// no space, no list, nothing that overflows).
fn length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(raw: &str) -> (Head<'_>, usize) {
        match parse(raw.as_bytes()) {
            Parsed::Request { head, len } => (head, len),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_poll_head_is_framed_with_no_body() {
        let raw = "GET /discovery/polls?appid=a&env=dev HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\n\r\nGET /next";
        let (head, len) = framed(raw);
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/discovery/polls?appid=a&env=dev");
        assert_eq!(head.body, 0);
        assert!(!head.expects);
        assert_eq!(&raw[len..], "GET /next");
        assert_eq!(
            head.header_bytes,
            "Host".len() + 1 + 4 + "User-Agent".len() + 18 + 4
        );
    }

    #[test]
    fn a_form_post_is_framed_by_its_length() {
        let (head, _) = framed(
            "POST /discovery/renew HTTP/1.1\r\nContent-Length: 42\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(head.body, 42);
        assert!(head.expects);
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert_eq!(
            parse(b"GET /discovery/polls?appid=a HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        assert_eq!(parse(b""), Parsed::Partial);
    }

    #[test]
    fn what_is_not_framed_beyond_doubt_is_hyper_s() {
        for raw in [
            // chunked, alone or with a length (the smuggling pair)
            "POST /discovery/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            // two lengths, even equal; a length that is not plain digits
            "POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            // the connection ends or changes protocol after this request
            "GET /discovery/polls HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /discovery/polls HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
            // HTTP/1.0 keeps its own keep-alive rules
            "GET /discovery/polls HTTP/1.0\r\n\r\n",
            // not HTTP
            "GET /discovery/polls HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03",
        ] {
            assert_eq!(parse(raw.as_bytes()), Parsed::Hyper, "{raw:?}");
        }
    }

    /// A head with many headers: past hyper's count it is hyper's.
    #[test]
    fn more_headers_than_hyper_reads_are_hyper_s() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS + 1 {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(parse(raw.as_bytes()), Parsed::Hyper);
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.-]{1,12}"
    }

    proptest! {
        /// Any well-formed request, cut anywhere, is partial before its
        /// head ends and framed at exactly its head's length once it has
        /// it, whatever follows (its body, the next request, noise).
        #[test]
        fn a_request_is_framed_at_the_end_of_its_head(
            path in "/[a-z/]{0,20}",
            query in proptest::collection::vec((token(), token()), 0..6),
            headers in proptest::collection::vec((token(), "[ -~]{0,20}"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            after in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut target = path.clone();
            for (i, (k, v)) in query.iter().enumerate() {
                target.push(if i == 0 { '?' } else { '&' });
                target.push_str(&format!("{k}={v}"));
            }
            let mut head = format!("POST {target} HTTP/1.1\r\n");
            for (name, value) in &headers {
                let name = format!("x-{name}");
                head.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut raw = head.clone().into_bytes();
            raw.extend(&body);
            raw.extend(&after);
            for cut in 0..head.len() {
                prop_assert_eq!(parse(&raw[..cut]), Parsed::Partial, "cut at {}", cut);
            }
            match parse(&raw) {
                Parsed::Request { head: h, len } => {
                    prop_assert_eq!(len, head.len());
                    prop_assert_eq!(h.target, target.as_str());
                    prop_assert_eq!(h.body, body.len() as u64);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Arbitrary bytes never panic the parser, and whatever it frames
        /// ends inside what was read.
        #[test]
        fn arbitrary_bytes_are_refused_or_framed_within_them(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Parsed::Request { len, .. } = parse(&raw) {
                prop_assert!(len <= raw.len());
            }
        }
    }
}
