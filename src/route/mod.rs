//! The route table: (method, path) to a route index plus path parameters. Compiled once
//! from the configuration; pure, no I/O.
//!
//! Templates are `/literal/{param}/...` with an optional final greedy `{name+}` that takes
//! the rest of the path. When several routes match, the most specific wins, segment by
//! segment: a literal beats a parameter, which beats a greedy parameter (API Gateway's
//! rule). Path parameters are percent-decoded.

use std::fmt;

use http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// Path parameters, in template order.
pub type PathParams = Vec<(String, String)>;

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn valid_param_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<PathTemplate, String> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err("must start with '/'".into());
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let parts: Vec<&str> = rest.split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let seg =
                    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                        if let Some(name) = inner.strip_suffix('+') {
                            if i + 1 != parts.len() {
                                return Err(format!(
                                    "greedy parameter {{{inner}}} must be the last segment"
                                ));
                            }
                            if !valid_param_name(name) {
                                return Err(format!("invalid parameter name {name:?}"));
                            }
                            Segment::Greedy(name.to_string())
                        } else {
                            if !valid_param_name(inner) {
                                return Err(format!("invalid parameter name {inner:?}"));
                            }
                            Segment::Param(inner.to_string())
                        }
                    } else if part.is_empty() {
                        return Err("empty path segment".into());
                    } else if part.contains(['{', '}']) {
                        return Err(format!(
                            "segment {part:?}: a parameter must be a whole segment"
                        ));
                    } else {
                        Segment::Literal(part.to_string())
                    };
                segments.push(seg);
            }
        }
        let mut names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("a parameter name is used twice".into());
        }
        Ok(PathTemplate {
            raw: raw.to_string(),
            segments,
        })
    }

    /// The template with parameter names erased, for detecting duplicate routes.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param(_) => "/{}".into(),
                Segment::Greedy(_) => "/{+}".into(),
            })
            .collect()
    }

    /// The names of its parameters, in order (a greedy one without its `+`).
    pub fn param_names(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The name of its greedy `{name+}` parameter, if it ends with one.
    pub fn greedy_param(&self) -> Option<&str> {
        self.segments.iter().find_map(|s| match s {
            Segment::Greedy(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Matches a request path's segments; returns the parameters and a specificity score
    /// (higher is more specific).
    #[cfg(test)]
    fn matches(&self, parts: &[&str]) -> Option<(PathParams, Vec<u8>)> {
        let mut params = Vec::new();
        let mut score = Vec::with_capacity(self.segments.len());
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    score.push(2);
                }
                Segment::Param(name) => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    params.push((name.clone(), percent_decode(part)?));
                    score.push(1);
                }
                Segment::Greedy(name) => {
                    let rest = parts.get(i..)?.join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), percent_decode(&rest)?));
                    score.push(0);
                    return Some((params, score));
                }
            }
        }
        (parts.len() == self.segments.len()).then_some((params, score))
    }
}

/// Decodes `%XX` escapes (`+` stays a plus in paths); `None` when malformed.
fn percent_decode(s: &str) -> Option<String> {
    crate::mapping::util::percent_decode(s, false, false).ok()
}

/// A matched route.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route in the configuration.
    pub route: usize,
    pub params: PathParams,
}

/// All routes, compiled into a tree of path segments, so a lookup follows the request's
/// path instead of trying every route: its cost does not grow with the number of routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(Option<Method>, PathTemplate)>,
    root: Node,
}

/// The routes whose templates share a prefix of segments.
#[derive(Debug, Default)]
struct Node {
    literals: std::collections::HashMap<String, Node>,
    param: Option<Box<Node>>,
    /// Routes ending here, by index, in configuration order.
    ends: Vec<usize>,
    /// Routes whose greedy parameter starts here.
    greedy: Vec<usize>,
}

impl RouteTable {
    /// Builds the table; `method: None` matches every method.
    pub fn new(routes: impl IntoIterator<Item = (Option<Method>, PathTemplate)>) -> RouteTable {
        let routes: Vec<(Option<Method>, PathTemplate)> = routes.into_iter().collect();
        let mut root = Node::default();
        for (i, (_, template)) in routes.iter().enumerate() {
            let mut node = &mut root;
            let mut greedy = false;
            for seg in &template.segments {
                match seg {
                    Segment::Literal(l) => node = node.literals.entry(l.clone()).or_default(),
                    Segment::Param(_) => node = node.param.get_or_insert_with(Box::default),
                    Segment::Greedy(_) => greedy = true,
                }
            }
            if greedy {
                node.greedy.push(i);
            } else {
                node.ends.push(i);
            }
        }
        RouteTable { routes, root }
    }

    /// The most specific route for a request, or `None`: segment by segment a literal
    /// beats a parameter, which beats a greedy parameter, and an exact method beats ANY at
    /// the same specificity. The tree is searched in that order, so the first route found
    /// is the most specific.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<Matched> {
        let path = path.strip_prefix('/')?;
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut values = Vec::new();
        let (route, values) = self.search(&self.root, &parts, method, &mut values)?;
        let names = self.routes[route].1.param_names();
        let params = names.into_iter().map(str::to_string).zip(values).collect();
        Some(Matched { route, params })
    }

    /// The best route under `node` for the remaining `parts`, and its parameters' values
    /// (those taken above `node` are in `values`).
    fn search(
        &self,
        node: &Node,
        parts: &[&str],
        method: &Method,
        values: &mut Vec<String>,
    ) -> Option<(usize, Vec<String>)> {
        let Some((part, rest)) = parts.split_first() else {
            return self.pick(&node.ends, method).map(|r| (r, values.clone()));
        };
        if let Some(child) = node.literals.get(*part)
            && let Some(found) = self.search(child, rest, method, values)
        {
            return Some(found);
        }
        if let Some(child) = &node.param
            && !part.is_empty()
            && let Some(value) = percent_decode(part)
        {
            values.push(value);
            let found = self.search(child, rest, method, values);
            values.pop();
            if found.is_some() {
                return found;
            }
        }
        if node.greedy.is_empty() {
            return None;
        }
        let route = self.pick(&node.greedy, method)?;
        let all = parts.join("/");
        if all.is_empty() {
            return None;
        }
        let mut taken = values.clone();
        taken.push(percent_decode(&all)?);
        Some((route, taken))
    }

    /// Of routes with the same template shape, the one for `method`: its own, else ANY.
    fn pick(&self, candidates: &[usize], method: &Method) -> Option<usize> {
        let of = |i: &usize| self.routes[*i].0.as_ref();
        candidates
            .iter()
            .find(|i| of(i) == Some(method))
            .or_else(|| candidates.iter().find(|i| of(i).is_none()))
            .copied()
    }

    /// The route table's answer the simple way, trying every route (what the tree must
    /// agree with; kept for tests).
    #[cfg(test)]
    fn lookup_linear(&self, method: &Method, path: &str) -> Option<Matched> {
        let path = path.strip_prefix('/')?;
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut best: Option<(Vec<u8>, bool, Matched)> = None;
        for (i, (m, template)) in self.routes.iter().enumerate() {
            if m.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            let Some((params, score)) = template.matches(&parts) else {
                continue;
            };
            // An exact method beats ANY at the same specificity.
            let exact = m.is_some();
            let better = match &best {
                None => true,
                Some((s, e, _)) => (&score, exact) > (s, *e),
            };
            if better {
                best = Some((score, exact, Matched { route: i, params }));
            }
        }
        best.map(|(_, _, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        RouteTable::new(routes.iter().map(|(m, p)| {
            let m = (*m != "ANY").then(|| Method::from_bytes(m.as_bytes()).unwrap());
            (m, PathTemplate::parse(p).unwrap())
        }))
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_literals_params_and_greedy() {
        let t = table(&[
            ("POST", "/v1/events"),
            ("POST", "/v1/partners/{partner}/messages"),
            ("GET", "/files/{path+}"),
            ("ANY", "/"),
        ]);
        assert_eq!(
            t.lookup(&Method::POST, "/v1/events"),
            Some(Matched {
                route: 0,
                params: vec![]
            })
        );
        assert_eq!(
            t.lookup(&Method::POST, "/v1/partners/acme%20co/messages")
                .unwrap()
                .params,
            params(&[("partner", "acme co")])
        );
        assert_eq!(
            t.lookup(&Method::GET, "/files/a/b/c.txt").unwrap().params,
            params(&[("path", "a/b/c.txt")])
        );
        assert_eq!(t.lookup(&Method::DELETE, "/").unwrap().route, 3);
        assert_eq!(t.lookup(&Method::GET, "/v1/events"), None);
        assert_eq!(t.lookup(&Method::POST, "/v1/events/"), None);
        assert_eq!(t.lookup(&Method::POST, "/v1//events"), None);
        assert_eq!(t.lookup(&Method::GET, "/files/"), None);
        assert_eq!(t.lookup(&Method::POST, "/v1/partners/%zz/messages"), None);
        assert_eq!(t.lookup(&Method::POST, "v1/events"), None);
    }

    #[test]
    fn most_specific_route_wins() {
        let t = table(&[
            ("GET", "/a/{x+}"),
            ("GET", "/a/{id}"),
            ("GET", "/a/b"),
            ("ANY", "/a/b"),
        ]);
        assert_eq!(t.lookup(&Method::GET, "/a/b").unwrap().route, 2);
        assert_eq!(t.lookup(&Method::POST, "/a/b").unwrap().route, 3);
        assert_eq!(t.lookup(&Method::GET, "/a/c").unwrap().route, 1);
        assert_eq!(t.lookup(&Method::GET, "/a/c/d").unwrap().route, 0);
    }

    #[test]
    fn bad_templates_are_rejected() {
        for bad in [
            "v1", "/a//b", "/{x+}/y", "/a{b}", "/{}", "/{a}/{a}", "/{a b}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PathTemplate::parse("/a/{x}/{y+}").unwrap().shape(),
            "/a/{}/{+}"
        );
    }

    /// The tree answers exactly as trying every route does, on generated route sets and
    /// paths (literals, parameters, greedy parameters, ANY and exact methods, empty and
    /// percent-encoded segments).
    #[test]
    fn the_tree_agrees_with_trying_every_route() {
        use proptest::prelude::*;
        let segment = prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "c"]).prop_map(|l| l.to_string()),
            2 => Just("{}".to_string()),
        ];
        let template =
            (prop::collection::vec(segment, 0..4), any::<bool>()).prop_map(|(segs, greedy)| {
                let mut path = String::new();
                for (i, s) in segs.iter().enumerate() {
                    path.push('/');
                    path.push_str(&if s == "{}" {
                        format!("{{p{i}}}")
                    } else {
                        s.clone()
                    });
                }
                if greedy {
                    path.push_str(&format!("/{{g{}+}}", segs.len()));
                }
                if path.is_empty() {
                    path.push('/');
                }
                path
            });
        let method = prop::sample::select(vec!["GET", "POST", "ANY"]);
        let routes = prop::collection::vec((method, template), 1..12);
        let part = prop::sample::select(vec!["a", "b", "c", "d", "", "%61", "%zz", "a%2Fb"]);
        let path = prop::collection::vec(part, 0..6).prop_map(|p| format!("/{}", p.join("/")));
        let paths = prop::collection::vec(path, 1..16);
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 2000,
            ..Default::default()
        });
        runner
            .run(&(routes, paths), |(routes, paths)| {
                let owned: Vec<(&str, &str)> =
                    routes.iter().map(|(m, p)| (*m, p.as_str())).collect();
                let t = table(&owned);
                for path in &paths {
                    for m in [Method::GET, Method::POST, Method::DELETE] {
                        prop_assert_eq!(
                            t.lookup(&m, path),
                            t.lookup_linear(&m, path),
                            "{} {} in {:?}",
                            m,
                            path,
                            routes
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
