//! The table's rules, message by message.
use super::*;

fn table_with_one(streamed_upload: bool) -> (Table<()>, Exchange) {
    let mut t = Table::default();
    let window = streamed_upload.then_some(1000);
    let (x, _) = t
        .register::<Bytes, ()>(
            (),
            &http::Method::POST,
            &http::Uri::from_static("/"),
            window,
            |_| Ok(Bytes::new()),
        )
        .unwrap();
    (t, x)
}

fn streamed_head(id: u64) -> WorkerMsg {
    WorkerMsg::ResponseHead(ResponseHead {
        id,
        status: 200,
        headers: vec![],
        body: BodyKind::Streamed { length: None },
    })
}

fn chunk(id: u64, data: Bytes) -> WorkerMsg {
    WorkerMsg::BodyChunk(BodyChunk { id, data })
}

#[test]
fn small_chunks_are_copied_out_of_the_read_buffer_and_large_ones_are_not() {
    let (mut t, mut x) = table_with_one(false);
    t.route(streamed_head(x.id), 1 << 20).unwrap();
    let Ok(Ok(Start {
        body: StartBody::Streamed { mut pieces, .. },
        ..
    })) = x.head.try_recv()
    else {
        panic!("a streamed head");
    };
    let buffer = Bytes::from(vec![7u8; 64 * 1024]);
    let within = |b: &Bytes| {
        let (start, end) = (
            buffer.as_ptr() as usize,
            buffer.as_ptr() as usize + buffer.len(),
        );
        (start..end).contains(&(b.as_ptr() as usize))
    };
    t.route(chunk(x.id, buffer.slice(0..100)), 0).unwrap();
    t.route(chunk(x.id, buffer.slice(100..100 + COPY_BELOW)), 0)
        .unwrap();
    let Ok(Piece::Data(small)) = pieces.try_recv() else {
        panic!()
    };
    let Ok(Piece::Data(large)) = pieces.try_recv() else {
        panic!()
    };
    assert_eq!(small, buffer.slice(0..100));
    assert!(!within(&small), "a small chunk pins nothing");
    assert!(within(&large), "a large one is not copied");
}

#[test]
fn credits_for_more_than_was_sent_are_a_violation() {
    let (mut t, x) = table_with_one(true);
    let credit = |bytes| WorkerMsg::Credit(Credit { id: x.id, bytes });
    assert!(t.body_sent(x.id, 300));
    t.route(credit(200), 0).unwrap();
    t.route(credit(100), 0).unwrap();
    let window = x.send_window.as_ref().unwrap();
    assert_eq!(
        window.available_permits(),
        1300,
        "what was credited, no more"
    );
    let v = t.route(credit(1), 0).err().expect("a violation");
    assert!(v.0.contains("credits for 301"), "{}", v.0);
    // A flood of maximal credits is refused before it reaches the semaphore.
    assert!(t.route(credit(u32::MAX), 0).is_err());
}

#[test]
fn a_head_or_trailers_with_too_many_fields_is_a_violation() {
    let (mut t, x) = table_with_one(false);
    let field = || Header::new(Bytes::from_static(b"x"), Bytes::new());
    let head = WorkerMsg::ResponseHead(ResponseHead {
        id: x.id,
        status: 200,
        headers: (0..=MAX_RESPONSE_FIELDS).map(|_| field()).collect(),
        body: BodyKind::Empty,
    });
    assert!(t.route(head, 0).err().unwrap().0.contains("fields"));
    let (mut t, x) = table_with_one(false);
    t.route(streamed_head(x.id), 10).unwrap();
    let end = WorkerMsg::BodyEnd(BodyEnd {
        id: x.id,
        trailers: (0..=MAX_RESPONSE_FIELDS).map(|_| field()).collect(),
    });
    assert!(t.route(end, 0).err().unwrap().0.contains("trailer fields"));
}

#[test]
fn the_request_timeout_starts_when_the_upload_is_in() {
    let (mut t, mut x) = table_with_one(true);
    t.expire_heads(Duration::ZERO);
    assert!(x.head.try_recv().is_err(), "still uploading: not timed out");
    assert!(t.upload_done(x.id));
    t.expire_heads(Duration::ZERO);
    assert!(matches!(x.head.try_recv(), Ok(Err(Lost::TimedOut))));
}

#[test]
fn a_stream_is_stalled_only_with_bytes_waiting_and_no_progress() {
    let (mut t, mut x) = table_with_one(false);
    t.route(streamed_head(x.id), 1 << 20).unwrap();
    let Ok(Ok(Start {
        body: StartBody::Streamed { progress, .. },
        ..
    })) = x.head.try_recv()
    else {
        panic!("a streamed head");
    };
    progress.attach(&std::sync::Arc::new(crate::activity::Activity::default()));
    // A worker with nothing to send (a quiet event stream) is not the client's fault.
    assert!(t.stalled(Duration::ZERO).is_empty());
    t.route(chunk(x.id, Bytes::from_static(b"event")), 0)
        .unwrap();
    progress.took(5);
    assert!(
        t.stalled(Duration::ZERO).is_empty(),
        "the client took it all"
    );
    t.route(chunk(x.id, Bytes::from_static(b"next")), 0)
        .unwrap();
    assert!(
        t.stalled(Duration::from_secs(60)).is_empty(),
        "not for long yet"
    );
    assert_eq!(t.stalled(Duration::ZERO), vec![x.id]);
    assert!(t.stalled(Duration::ZERO).is_empty(), "cancelled once");
    assert!(t.overdue_cancel(Duration::from_secs(60)).is_none());
}

#[test]
fn a_retiring_goodbye_refuses_what_was_sent_after_it_and_closes_the_table() {
    let mut t: Table<()> = Table::default();
    let mut xs: Vec<Exchange> = (0..3)
        .map(|_| {
            let uri = http::Uri::from_static("/");
            t.register::<Bytes, ()>((), &http::Method::POST, &uri, None, |_| Ok(Bytes::new()))
                .unwrap()
                .0
        })
        .collect();
    // It claims a request it was never sent: a violation.
    assert!(Table::<()>::default().retire(Some(1)).is_err());
    let refused = t.retire(Some(1)).unwrap();
    assert_eq!(refused.len(), 2);
    refused.into_iter().for_each(Entry::refuse);
    assert!(matches!(xs[1].head.try_recv(), Ok(Err(Lost::Refused))));
    assert!(matches!(xs[2].head.try_recv(), Ok(Err(Lost::Refused))));
    // The one it took is still its to answer.
    assert!(xs[0].head.try_recv().is_err());
    assert_eq!(t.len(), 1);
    let uri = http::Uri::from_static("/");
    let again = t.register::<Bytes, ()>((), &http::Method::GET, &uri, None, |_| Ok(Bytes::new()));
    assert!(matches!(again, Err((Refused::Gone, ()))));
}

#[test]
fn a_goodbye_that_disowns_an_answered_request_is_a_violation() {
    let (mut t, x) = table_with_one(false);
    t.route(streamed_head(x.id), 1 << 20).unwrap();
    assert!(t.retire(Some(0)).is_err());
}
