use std::time::Duration;

use super::*;

fn settings(key: &[&str], shared: bool, invalidation: Invalidation) -> CacheSettings {
    CacheSettings {
        ttl: Duration::from_secs(60),
        key: key.iter().map(|k| CacheParam::parse(k).unwrap()).collect(),
        max_bytes: 1 << 20,
        shared,
        invalidation,
        x_cache: true,
    }
}

struct Req {
    method: http::Method,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    caller: Option<&'static str>,
}

impl Req {
    fn get(device: &str, caller: Option<&'static str>) -> Req {
        Req {
            method: http::Method::GET,
            path: vec![("deviceId".into(), device.into())],
            query: vec![("since".into(), "1".into()), ("other".into(), "x".into())],
            headers: HeaderMap::new(),
            caller,
        }
    }

    fn keyed(&self) -> Keyed<'_> {
        Keyed {
            method: &self.method,
            path_params: &self.path,
            query: &self.query,
            headers: &self.headers,
            caller: self.caller,
        }
    }
}

fn answer(status: u16, body: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("x-amzn-requestid", HeaderValue::from_static("first"));
    resp
}

async fn body(resp: Response<Body>) -> String {
    use http_body_util::BodyExt as _;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Looks up; on a miss keeps `fresh`. Returns the body served and whether it was a hit.
async fn serve(c: &RouteCache, r: &Req, fresh: &str, may: bool) -> (String, bool) {
    match c.lookup(&r.keyed(), || may) {
        Lookup::Hit(resp) => {
            assert_eq!(resp.headers()["x-cache"], "Hit");
            assert!(
                resp.headers().get("x-amzn-requestid").is_none(),
                "the first request's id is not replayed"
            );
            (body(resp).await, true)
        }
        Lookup::Miss(key) => {
            let resp = c.keep(key, answer(200, fresh)).await;
            assert_eq!(resp.headers()["x-cache"], "Miss");
            (body(resp).await, false)
        }
        Lookup::Bypass => panic!("bypassed"),
    }
}

#[tokio::test]
async fn answers_are_kept_by_parameters_and_caller() {
    let c = RouteCache::new(
        "GET /d/{deviceId}",
        &settings(
            &["path.deviceId", "querystring.since"],
            false,
            Invalidation::Never,
        ),
    );
    assert_eq!(
        serve(&c, &Req::get("a", Some("k1")), "A1", false).await,
        ("A1".into(), false)
    );
    assert_eq!(
        serve(&c, &Req::get("a", Some("k1")), "new", false).await,
        ("A1".into(), true)
    );
    // Another device, another caller, an anonymous caller: each its own answer.
    assert_eq!(
        serve(&c, &Req::get("b", Some("k1")), "B1", false).await,
        ("B1".into(), false)
    );
    assert_eq!(
        serve(&c, &Req::get("a", Some("k2")), "A2", false).await,
        ("A2".into(), false)
    );
    assert_eq!(
        serve(&c, &Req::get("a", None), "A0", false).await,
        ("A0".into(), false)
    );
    // A parameter outside the key does not split; one in it does.
    let mut r = Req::get("a", Some("k1"));
    r.query[1].1 = "changed".into();
    assert_eq!(serve(&c, &r, "new", false).await, ("A1".into(), true));
    r.query[0].1 = "2".into();
    assert_eq!(serve(&c, &r, "A1b", false).await, ("A1b".into(), false));
    // Values cannot run together into another request's key.
    let c2 = RouteCache::new(
        "r",
        &settings(
            &["querystring.a", "querystring.b"],
            true,
            Invalidation::Never,
        ),
    );
    let mut x = Req::get("a", None);
    x.query = vec![("a".into(), "1:2".into()), ("b".into(), "3".into())];
    let mut y = Req::get("a", None);
    y.query = vec![("a".into(), "1".into()), ("b".into(), "2:3".into())];
    assert_ne!(c2.key(&x.keyed()), c2.key(&y.keyed()));
    // A shared cache serves every caller the same answer.
    let shared = RouteCache::new(
        "r",
        &settings(&["path.deviceId"], true, Invalidation::Never),
    );
    assert!(
        !serve(&shared, &Req::get("a", Some("k1")), "S", false)
            .await
            .1
    );
    assert_eq!(
        serve(&shared, &Req::get("a", Some("k9")), "x", false).await,
        ("S".into(), true)
    );
}

#[tokio::test]
async fn only_successes_of_gets_are_kept() {
    let c = RouteCache::new(
        "r",
        &settings(&["path.deviceId"], false, Invalidation::Never),
    );
    let r = Req::get("a", None);
    let Lookup::Miss(key) = c.lookup(&r.keyed(), || false) else {
        panic!()
    };
    let resp = c.keep(key, answer(404, "nope")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(body(resp).await, "nope");
    assert!(c.is_empty());
    let mut post = Req::get("a", None);
    post.method = http::Method::POST;
    assert!(matches!(c.lookup(&post.keyed(), || false), Lookup::Bypass));
}

#[tokio::test]
async fn max_age_zero_refreshes_only_when_the_route_allows_it() {
    for (policy, may, refreshed) in [
        (Invalidation::Anyone, false, true),
        (Invalidation::Never, true, false),
        (Invalidation::Authorized, false, false),
        (Invalidation::Authorized, true, true),
    ] {
        let c = RouteCache::new("r", &settings(&["path.deviceId"], false, policy));
        serve(&c, &Req::get("a", Some("k")), "old", may).await;
        let mut r = Req::get("a", Some("k"));
        r.headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, max-age=0"),
        );
        let (served, hit) = serve(&c, &r, "fresh", may).await;
        assert_eq!(
            (served.as_str(), !hit),
            (if refreshed { "fresh" } else { "old" }, refreshed),
            "{policy:?} {may}"
        );
        // The fresh answer is the one kept.
        let (again, _) = serve(&c, &Req::get("a", Some("k")), "x", may).await;
        assert_eq!(again, if refreshed { "fresh" } else { "old" });
    }
}

#[tokio::test]
async fn memory_is_bounded_by_bytes() {
    let mut s = settings(&["path.deviceId"], true, Invalidation::Never);
    s.max_bytes = 64 * 1024;
    let c = RouteCache::new("r", &s);
    let big = "x".repeat(4096);
    for i in 0..200 {
        serve(&c, &Req::get(&format!("d{i}"), None), &big, false).await;
    }
    assert!(c.bytes() <= 64 * 1024, "{} bytes held", c.bytes());
    assert!(c.len() >= 10 && c.len() < 200, "{} entries", c.len());
}

#[tokio::test]
async fn answers_expire_after_their_ttl() {
    let mut s = settings(&["path.deviceId"], true, Invalidation::Never);
    s.ttl = Duration::from_millis(300);
    let c = RouteCache::new("r", &s);
    serve(&c, &Req::get("a", None), "one", false).await;
    assert!(serve(&c, &Req::get("a", None), "x", false).await.1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        serve(&c, &Req::get("a", None), "two", false).await,
        ("two".into(), false)
    );
}
