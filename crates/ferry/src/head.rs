//! A request's head frame, encoded straight from hyper's parsed request: the method,
//! target, peer and every header are borrowed and copied once, into the frame
//! (`RequestHeadRef`, with the headers serialized from hyper's map in place), so the
//! frame buffer (and the `Bytes` handle it becomes) is all it allocates. An inline
//! body is not copied here: the frame is queued as its head and the body's own
//! `Bytes`, written one after the other (the writer copies only a small one). HTTP/2 requests are made to look as HTTP/1.1
//! ones would to a worker: an origin-form target, `host` from the authority, and
//! split cookies joined.

use bytes::Bytes;
use ferry_protocol::*;
use http::header;

use crate::dispatch::writer::Outgoing;

/// What a request's head frame is made of, borrowed from hyper's request: encoding
/// copies each header once, into the frame, with no buffer per header on the way.
pub struct Head<'a> {
    pub parts: &'a http::request::Parts,
    /// The client's address, `ip:port`.
    pub peer: &'a str,
    /// A body small enough to ride in the head frame.
    pub inline: Option<&'a Bytes>,
    /// The body follows as chunks (then `inline` is `None`).
    pub streamed: bool,
    /// The body's declared length, if any.
    pub length: Option<u64>,
}

impl Head<'_> {
    /// The framed `RequestHead` for request `id`, ready for the channel's writer.
    pub fn encode(&self, id: u64, max_frame: usize) -> Result<Outgoing, ProtocolError> {
        let parts = self.parts;
        // HTTP/2 carries the authority and path as pseudo-headers, which hyper puts in
        // an absolute URI. Workers get what an HTTP/1.1 request would have given them:
        // an origin-form target, and the authority as `host` if there is none.
        let h2 = parts.version == http::Version::HTTP_2;
        let target: std::borrow::Cow<str> = match parts.uri.path_and_query() {
            Some(pq) if h2 || parts.uri.scheme().is_none() => pq.as_str().into(),
            _ => parts.uri.to_string().into(),
        };
        let host = match parts.uri.authority() {
            Some(a) if h2 && !parts.headers.contains_key(header::HOST) => {
                Some(a.as_str().as_bytes())
            }
            _ => None,
        };
        // HTTP/2 clients may split the cookie header into one field per cookie (RFC 9113
        // §8.2.3); HTTP/1.1 has one, and frameworks often read only the first.
        let joined_cookie = h2.then(|| {
            let cookies = parts.headers.get_all(header::COOKIE);
            let values: Vec<&[u8]> = cookies.iter().map(|v| v.as_bytes()).collect();
            (values.len() > 1).then(|| values.join(&b"; "[..]))
        });
        let joined_cookie = joined_cookie.flatten();
        let headers = WireHeaders::new(host, &parts.headers, joined_cookie.as_deref());
        let head = RequestHeadRef {
            id,
            method: parts.method.as_str(),
            target: &target,
            version: version(parts.version),
            headers: &headers,
            peer: self.peer,
            body: match (self.inline, self.streamed) {
                (Some(b), _) => BodyKind::Inline(BytesRef(b)),
                (None, true) => BodyKind::Streamed {
                    length: self.length,
                },
                (None, false) => BodyKind::Empty,
            },
        };
        // Sized up front: the frame buffer is the one allocation.
        // The body is not copied here: the writer's queue copies a small one and
        // writes a large one from its own `Bytes`.
        let mut buf =
            bytes::BytesMut::with_capacity(128 + target.len() + self.peer.len() + headers.bytes);
        match self.inline {
            Some(body) => {
                frame::encode_head_ref_prefix(&head, body.len(), &mut buf, max_frame)?;
                Ok(Outgoing::Split(buf.freeze(), body.clone()))
            }
            None => {
                frame::encode_head_ref(&head, &mut buf, max_frame)?;
                Ok(Outgoing::Frame(buf.freeze()))
            }
        }
    }
}

/// A request's headers as the channel carries them, serialized straight from hyper's
/// map: no list of them is built on the way.
struct WireHeaders<'a> {
    /// An HTTP/2 request's authority, as `host`, first.
    host: Option<&'a [u8]>,
    map: &'a http::HeaderMap,
    /// HTTP/2 cookies joined into one field, which replaces the separate ones, last.
    cookie: Option<&'a [u8]>,
    /// How many fields, and the bytes they take on the wire with their lengths:
    /// counted in one pass, for the sequence's length and the buffer's size.
    count: usize,
    bytes: usize,
}

impl<'a> WireHeaders<'a> {
    fn new(host: Option<&'a [u8]>, map: &'a http::HeaderMap, cookie: Option<&'a [u8]>) -> Self {
        let mut h = WireHeaders {
            host,
            map,
            cookie,
            count: 0,
            bytes: 0,
        };
        (h.count, h.bytes) = h
            .fields()
            .fold((0, 0), |(c, b), (n, v)| (c + 1, b + 16 + n.len() + v.len()));
        h
    }

    /// The fields in the order sent.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let skip_cookies = self.cookie.is_some();
        let host = self.host.map(|h| (&b"host"[..], h));
        let cookie = self.cookie.map(|c| (&b"cookie"[..], c));
        let map = self
            .map
            .iter()
            .filter(move |(n, _)| !(skip_cookies && *n == header::COOKIE))
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        host.into_iter().chain(map).chain(cookie)
    }
}

impl serde::Serialize for WireHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.count))?;
        for (name, value) in self.fields() {
            seq.serialize_element(&Header {
                name: BytesRef(name),
                value: BytesRef(value),
            })?;
        }
        seq.end()
    }
}

fn version(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_09 => HttpVersion::Http09,
        http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::Http2,
        http::Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's bytes, and the second piece if it came in two.
    fn frame_of(out: Outgoing) -> (Option<Bytes>, MasterMsg) {
        let (tail, bytes) = match out {
            Outgoing::Frame(f) => (None, f),
            Outgoing::Split(head, body) => {
                let whole = Bytes::from([&head[..], &body[..]].concat());
                (Some(body), whole)
            }
            Outgoing::Msg(_) => panic!("a head is a frame"),
        };
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4, "the prefix counts every piece");
        (tail, frame::decode_master(bytes.slice(4..)).unwrap())
    }

    /// An inline body is queued as its own `Bytes` (the same buffer, not a copy) after
    /// the head, whatever its size; the worker reads the whole request.
    #[test]
    fn an_inline_body_is_sent_from_its_own_bytes_and_arrives_whole() {
        let (parts, ()) = http::Request::post("/upload?x=1")
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts();
        for len in [0, 100, 4095, 4096, 60_000] {
            let body = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let head = Head {
                parts: &parts,
                peer: "127.0.0.1:5",
                inline: Some(&body),
                streamed: false,
                length: Some(len as u64),
            };
            let (tail, msg) = frame_of(head.encode(7, 1 << 20).unwrap());
            let tail = tail.expect("an inline body comes as the frame's second piece");
            assert_eq!(tail.as_ptr(), body.as_ptr(), "{len} bytes: copied");
            assert_eq!(tail.len(), len);
            let MasterMsg::RequestHead(h) = msg else {
                panic!("not a head: {msg:?}")
            };
            assert_eq!(
                (h.id, h.method.as_str(), h.target.as_str()),
                (7, "POST", "/upload?x=1")
            );
            assert_eq!(h.peer, "127.0.0.1:5");
            assert_eq!(h.body, BodyKind::Inline(body));
        }
        // Without a body, one piece.
        let head = Head {
            parts: &parts,
            peer: "",
            inline: None,
            streamed: false,
            length: None,
        };
        let (tail, msg) = frame_of(head.encode(8, 1 << 20).unwrap());
        assert!(tail.is_none());
        assert!(matches!(msg, MasterMsg::RequestHead(h) if h.body == BodyKind::Empty));
    }

    #[test]
    fn a_head_whose_inline_body_passes_the_frame_limit_is_refused() {
        let (parts, ()) = http::Request::post("/").body(()).unwrap().into_parts();
        let body = Bytes::from(vec![0u8; 10_000]);
        let head = Head {
            parts: &parts,
            peer: "",
            inline: Some(&body),
            streamed: false,
            length: None,
        };
        assert!(matches!(
            head.encode(1, 10_000),
            Err(ProtocolError::FrameTooLong { .. })
        ));
    }
}
