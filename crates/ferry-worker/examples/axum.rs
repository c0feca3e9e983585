//! An axum `Router` as a ferry worker: any `tower::Service` drops in.
//!
//! ```sh
//! cargo build -p ferry -p ferry-worker --example axum
//! ./target/debug/ferry --workers 2 -- ./target/debug/examples/axum
//! curl http://127.0.0.1:8080/users/7
//! ```

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { "Hello from axum!\n" }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u32>| async move { format!("user {id}\n") }),
        )
        .route("/echo", post(|body: axum::body::Bytes| async move { body }));
    ferry_worker::serve_service(app).await
}
