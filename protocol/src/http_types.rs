//! Conversions between protocol [`Header`] lists and the `http` crate's `HeaderMap`
//! (feature `http`), shared by the master and the Rust SDK.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::Header;

/// The fields of `map` as protocol headers, repeated names as separate entries in order.
///
/// ```
/// let mut map = http::HeaderMap::new();
/// map.append("x-a", "1".parse().unwrap());
/// map.append("x-a", "2".parse().unwrap());
/// let list = ferry_protocol::headers_from_map(&map);
/// assert_eq!(list.len(), 2);
/// assert_eq!(&list[1].value[..], b"2");
/// ```
pub fn headers_from_map(map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(n, v)| {
            Header::new(
                Bytes::copy_from_slice(n.as_str().as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect()
}

/// A `HeaderMap` from protocol headers, sharing their bytes. Entries whose name or
/// value is not valid HTTP are skipped: use this only for fields whose loss is
/// harmless (trailers); validate request and response heads field by field.
///
/// ```
/// use ferry_protocol::Header;
/// let map = ferry_protocol::map_from_headers(vec![Header::new("x-a", "1"), Header::new("bad name", "2")]);
/// assert_eq!(map.len(), 1);
/// ```
pub fn map_from_headers(headers: Vec<Header>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&h.name),
            HeaderValue::from_maybe_shared(h.value),
        ) {
            map.append(n, v);
        }
    }
    map
}
