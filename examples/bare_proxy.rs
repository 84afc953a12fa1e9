//! The floor for the HTTP proxy benchmark: an axum server that passes each request's body
//! to one backend with hyper's pooled client (the stack the gateway's proxy routes use) and
//! answers with the backend's status and body, doing nothing else.
//! `cargo run --release --example bare_proxy -- 127.0.0.1:4599 http://127.0.0.1:4598`

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

type Pooled = Client<HttpConnector, Full<Bytes>>;

async fn forward(
    State((client, backend)): State<(Pooled, Uri)>,
    req: Request<Body>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = backend;
    *out.headers_mut() = parts.headers;
    out.headers_mut().remove(axum::http::header::HOST);
    match client.request(out).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::from_parts(parts, Body::from(body))
        }
        Err(_) => Response::builder().status(502).body(Body::empty()).unwrap(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4599".into());
    let backend: Uri = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4598/".into())
        .parse()
        .unwrap();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(http);
    let app = Router::new()
        .fallback(forward)
        .with_state((client, backend));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare proxy on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
