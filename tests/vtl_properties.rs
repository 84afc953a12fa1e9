//! Property tests: generated templates and bodies never make the engine panic, hang or
//! exceed its bounds; structural invariants of rendering hold.
//!
//! `VTL_PROPTEST_CASES` sets the number of cases (default 2,000 per property, which keeps
//! the suite fast); a long run is `VTL_PROPTEST_CASES=1000000 cargo test --release --test
//! vtl_properties`.

use indexmap::IndexMap;
use ingest_gateway::mapping::{self, MappingInput, Params};
use ingest_gateway::vtl::{ErrorKind, Limits, Template};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn cases() -> u32 {
    std::env::var("VTL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Fragments that exercise the parser's modes: references, directives, literals, comments,
/// escapes, and the `$input`/`$util` surface.
const FRAGMENTS: &[&str] = &[
    "$",
    "#",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    "\\",
    ",",
    ":",
    "=",
    "==",
    "!",
    "&&",
    "||",
    "+",
    "-",
    "*",
    "/",
    "%",
    "<",
    ">",
    "..",
    ".",
    " ",
    "\n",
    "\t",
    "x",
    "1",
    "-3",
    "2.5",
    "true",
    "null",
    " in ",
    "#if(",
    "#elseif(",
    "#else",
    "#end",
    "#{end}",
    "#set(",
    "#foreach(",
    "#define(",
    "#macro(",
    "#break",
    "#stop",
    "#evaluate(",
    "##",
    "#*",
    "*#",
    "#[[",
    "]]#",
    "$a",
    "$b",
    "$!a",
    "${a}",
    "${",
    "$a.b",
    "$a[0]",
    "$a.size()",
    "$a.get(0)",
    "$a.add($a)",
    "$foreach.index",
    "$foreach.hasNext",
    "$velocityCount",
    "$input.body",
    "$input.path('$')",
    "$input.path('$.a')",
    "$input.json('$')",
    "$input.json('$.a[*]')",
    "$input.params()",
    "$input.params('h')",
    "$util.escapeJavaScript($a)",
    "$util.base64Encode($a)",
    "$util.parseJson($input.body)",
    "$util.urlDecode($a)",
    "$context.requestId",
    "$stageVariables.s",
    ".split(',')",
    ".replaceAll('a', '$1')",
    ".substring(1)",
    ".matches('(')",
    "[0..3]",
    "[1..-1]",
    "{'k': $a}",
    "'s'",
    "\"s$a\"",
    "\"\"",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat())
}

/// Templates that parse: nested blocks of text, references, #set, #if and #foreach.
fn valid_template() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z ,{}:\"\n]{0,8}".prop_map(|s| s),
        prop::sample::select(vec![
            "$a",
            "$b.c",
            "$input.json('$')",
            "$input.path('$.a')",
            "$i",
            "$foreach.count",
            "$util.escapeJavaScript($input.body)",
            "$b.size()",
            "$a.length()",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "#set($a = $input.path('$.a'))",
            "#set($b = [1, 'x', {'k': 2}])",
            "#set($a = \"$a$a\")",
            "#set($c = $c + 1)",
            "#set($b.c = 5)",
            "#set($ignore = $b.add($a))",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let body = prop::collection::vec(inner, 0..6).prop_map(|v| v.concat());
        prop_oneof![
            (body.clone(), body.clone())
                .prop_map(|(a, b)| format!("#if($a == $b)\n{a}#{{else}}{b}#{{end}}\n")),
            (
                prop::sample::select(vec![
                    "$input.path('$.list')",
                    "[1..5]",
                    "$b",
                    "$a.split('')"
                ]),
                body.clone()
            )
                .prop_map(|(coll, b)| format!("#foreach($i in {coll})\n{b}#{{end}}")),
            body.prop_map(|b| format!("#define($d){b}#{{end}}$d$d")),
        ]
    })
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| json!({"a": v.clone(), "list": [v, 1, "x"]}).to_string()),
        json_value().prop_map(|v| v.to_string()),
        ".{0,40}",
    ]
}

fn small_limits() -> Limits {
    Limits {
        max_steps: 20_000,
        max_output_bytes: 256 * 1024,
        ..Limits::default()
    }
}

fn render(template: &Template, body: &str) -> Result<String, ingest_gateway::vtl::Error> {
    let mut params = Params::default();
    params.header.insert("h".into(), "v".into());
    let stage = IndexMap::from([("s".to_string(), "stage".to_string())]);
    let context = || json!({"requestId": "r", "identity": {"sourceIp": "127.0.0.1"}});
    let input = MappingInput {
        body,
        params: &|| params.clone(),
        stage_variables: &stage,
        context: &context,
    };
    mapping::render(template, &input, &small_limits()).map(|r| r.body)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_soup_never_panics(src in soup(), body in body()) {
        if let Ok(t) = Template::compile("soup.vtl", &src) {
            let _ = render(&t, &body);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,200}", body in ".{0,64}") {
        if let Ok(t) = Template::compile("text.vtl", &src) {
            let _ = render(&t, &body);
        }
    }

    #[test]
    fn valid_templates_render_within_bounds(src in valid_template(), body in body()) {
        let t = Template::compile("valid.vtl", &src)
            .map_err(|e| TestCaseError::fail(format!("{e:#}\n{src}")))?;
        match render(&t, &body) {
            Ok(out) => prop_assert!(out.len() <= small_limits().max_output_bytes),
            Err(e) => prop_assert!(matches!(
                e.kind(),
                ErrorKind::FuelExhausted | ErrorKind::OutputLimit | ErrorKind::LoopLimit
                    | ErrorKind::Runtime | ErrorKind::DepthLimit
            ), "{e:#}"),
        }
    }

    /// Text without `$`, `#` or `\` renders as itself.
    #[test]
    fn plain_text_is_identity(src in "[^$#\\\\]{0,200}") {
        let t = Template::compile("plain.vtl", &src).unwrap();
        prop_assert_eq!(render(&t, "").unwrap(), src);
    }

    /// `$input.json('$')` re-serialises any JSON body to an equal value.
    #[test]
    fn input_json_round_trips(v in json_value()) {
        let t = Template::compile("rt.vtl", "$input.json('$')").unwrap();
        let out = render(&t, &v.to_string()).unwrap();
        let back: Json = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(back, v);
    }

    /// The fast path for an unchanged body gives exactly the bytes of re-serialising it,
    /// whatever the body's formatting.
    #[test]
    fn input_json_root_is_exact_reserialisation(v in json_value(), pretty in any::<bool>()) {
        let body = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        let parsed: Json = serde_json::from_str(&body).unwrap();
        let t = Template::compile("root.vtl", "$input.json('$')").unwrap();
        prop_assert_eq!(render(&t, &body).unwrap(), serde_json::to_string(&parsed).unwrap());
    }

    /// `$input.json` of a container of an unchanged body (taken from the body's text) gives
    /// exactly the bytes of re-serialising that container, and a changed body is re-serialised.
    #[test]
    fn input_json_of_a_part_is_exact_reserialisation(
        items in prop::collection::vec(json_value(), 1..6),
        pretty in any::<bool>(),
    ) {
        let doc = json!({"events": items, "o": {"k": items[0].clone()}});
        let body = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() };
        let parsed: Json = serde_json::from_str(&body).unwrap();
        let t = Template::compile(
            "parts.vtl",
            "#foreach($e in $input.path('$.events'))$input.json(\"$.events[$foreach.index]\")|#end$input.json('$.o')|$input.json('$.o.k')",
        ).unwrap();
        let mut expected = String::new();
        for e in parsed["events"].as_array().unwrap() {
            expected.push_str(&serde_json::to_string(e).unwrap());
            expected.push('|');
        }
        expected.push_str(&serde_json::to_string(&parsed["o"]).unwrap());
        expected.push('|');
        expected.push_str(&serde_json::to_string(&parsed["o"]["k"]).unwrap());
        prop_assert_eq!(render(&t, &body).unwrap(), expected);

        let changed = Template::compile(
            "changed.vtl",
            "$input.json('$.o')#set($o = $input.path('$.o'))#set($_ = $o.put('added', 1))$input.json('$.o')",
        ).unwrap();
        let mut after = parsed["o"].clone();
        after["added"] = json!(1);
        prop_assert_eq!(
            render(&changed, &body).unwrap(),
            format!("{}{}", serde_json::to_string(&parsed["o"]).unwrap(), serde_json::to_string(&after).unwrap())
        );
    }

    /// `escapeJavaScript` output, wrapped in quotes and with `\'` fixed, is a JSON string
    /// literal that decodes to the input.
    #[test]
    fn escape_javascript_makes_json_strings(s in any::<String>()) {
        let t = Template::compile(
            "esc.vtl",
            "\"$util.escapeJavaScript($input.path('$.s')).replaceAll(\"\\\\'\",\"'\")\"",
        )
        .unwrap();
        let out = render(&t, &json!({"s": s}).to_string()).unwrap();
        let back: String = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(back, s);
    }
}

/// Hostile templates are rejected quickly with a typed error, with the default limits.
/// A loop over a pretty-printed body's events: past the first few, each event is its slice
/// of the body's compact text, byte for byte what re-serialising writes.
#[test]
fn input_json_of_each_event_of_a_long_body_is_exact() {
    let events: Vec<Json> = (0..20)
        .map(|i| json!({"id": i, "tags": ["a", "b\n"], "o": {"p": i * 2, "s": "caf\u{e9}"}}))
        .collect();
    let body = serde_json::to_string_pretty(&events).unwrap();
    let t = Template::compile(
        "events.vtl",
        "#foreach($e in $input.path('$'))$input.json(\"$[$foreach.index]\")|#end",
    )
    .unwrap();
    let expected: String = events
        .iter()
        .map(|e| format!("{}|", serde_json::to_string(e).unwrap()))
        .collect();
    assert_eq!(render(&t, &body).unwrap(), expected);
}

#[test]
fn hostile_templates_are_bounded() {
    let cases: &[(&str, String, ErrorKind)] = &[
        (
            "foreach bomb",
            "#foreach($a in [1..1000])#foreach($b in [1..1000])#foreach($c in [1..1000])x#end#end#end"
                .into(),
            ErrorKind::FuelExhausted,
        ),
        ("string doubling", "#set($s = 'ab')#foreach($i in [1..64])#set($s = \"$s$s\")#end".into(), ErrorKind::OutputLimit),
        ("deep #if", format!("{}x{}", "#if(true)".repeat(5_000), "#end".repeat(5_000)), ErrorKind::DepthLimit),
        ("deep parens", format!("#set($x = {}1{})", "(".repeat(100_000), ")".repeat(100_000)), ErrorKind::DepthLimit),
        ("deep lists", format!("#set($x = {}1{})", "[".repeat(100_000), "]".repeat(100_000)), ErrorKind::DepthLimit),
        ("deep unary", format!("#set($x = {}true)", "!".repeat(100_000)), ErrorKind::DepthLimit),
        ("deep strings", format!("#set($x = {}x{})", "\"#set($y = ".repeat(200), ")\"".repeat(200)), ErrorKind::Syntax),
        ("recursive #define", "#define($a)$a$a#end$a".into(), ErrorKind::DepthLimit),
        ("huge range", "#set($r = [0..2000000000])".into(), ErrorKind::LoopLimit),
        ("self-containing list", "#set($l = [])#set($x = $l.add($l))$l".into(), ErrorKind::DepthLimit),
        ("loop over 1001 items", "#foreach($i in [0..1000])#end".into(), ErrorKind::LoopLimit),
    ];
    for (what, src, kind) in cases {
        let started = std::time::Instant::now();
        let result = Template::compile("hostile.vtl", src)
            .and_then(|t| t.render(&ingest_gateway::vtl::NoHost, &Limits::default()));
        let err = result.expect_err(what);
        assert_eq!(err.kind(), *kind, "{what}: {err:#}");
        // A safety net against hangs, far above the milliseconds these take.
        assert!(
            started.elapsed().as_secs() < 10,
            "{what} took {:?}",
            started.elapsed()
        );
    }
}
