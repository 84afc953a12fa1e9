//! The practical ceiling for the load benchmark: an axum server that reads the body and
//! answers 200. `cargo run --release --example bare_axum -- 127.0.0.1:4598`

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4598".into());
    let app = Router::new().fallback(post(|body: Bytes| async move {
        std::hint::black_box(body.len());
        "ok"
    }));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare axum on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
