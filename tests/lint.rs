//! `ingest-gateway lint`: each known template pitfall caught on a real-world-shaped
//! template, with the input that broke it and the fix; nothing on correct templates or the
//! shipped example; `check-config --lint` and `import-openapi` report the same.

mod support;

use serde_json::json;

const SFN: &str = "arn:aws:states:us-east-1:000000000000:stateMachine:orders";

/// A route per template: (path, action, target, template, model).
fn project(name: &str, routes: &[(&str, &str, &str, &str, Option<&str>)]) -> support::Project {
    let mut config = String::new();
    let mut files: Vec<(String, String)> = Vec::new();
    for (path, action, target, template, model) in routes {
        config += &format!(
            "\n[[routes]]\nmethod = \"POST\"\npath = \"/{path}\"\naction = \"{action}\"\ntarget = \"{target}\"\nrequest_templates = {{ \"application/json\" = \"mappings/{path}.vtl\" }}\n"
        );
        files.push((format!("mappings/{path}.vtl"), template.to_string()));
        if let Some(m) = model {
            config += &format!("request_model = \"models/{path}.json\"\n");
            files.push((format!("models/{path}.json"), m.to_string()));
        }
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    support::Project::custom(name, &config, &files)
}

/// The findings printed for each route, by route.
fn findings(out: &std::process::Output) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\n\n")
        .filter_map(|block| {
            let first = block.lines().next()?;
            let route = first.split(" (").next()?.to_string();
            route
                .starts_with("POST")
                .then(|| (route, block.to_string()))
        })
        .collect()
}

#[test]
fn lint_names_each_pitfall_with_the_input_that_broke_it_and_the_fix() {
    let detail_model = r#"{"type": "object", "required": ["detail"], "properties": {"detail": {"type": "object"}}}"#;
    let p = project(
        "lint-pitfalls",
        &[
            // The SAM/Step Functions default: escapeJavaScript's \' is not JSON.
            (
                "sam",
                "states:StartExecution",
                SFN,
                "{\"input\": \"$util.escapeJavaScript($input.json('$'))\", \"stateMachineArn\": \"arn:aws:states:us-east-1:000000000000:stateMachine:orders\"}",
                None,
            ),
            // A batch loop writing a comma after every record.
            (
                "comma",
                "kinesis:PutRecords",
                "clicks",
                "{\"StreamName\": \"clicks\", \"Records\": [\n#foreach($e in $input.path('$.events'))\n  {\"Data\": \"$util.base64Encode($input.json(\"$.events[$foreach.index]\"))\", \"PartitionKey\": \"$e.userId\"},\n#end\n]}",
                None,
            ),
            // DynamoDB: "$input.json(...)" quotes a value that is JSON already.
            (
                "quoted",
                "aws:dynamodb:PutItem",
                "orders",
                "{\"TableName\": \"orders\", \"Item\": {\"id\": {\"S\": \"$input.json('$.id')\"}, \"note\": {\"S\": \"$util.escapeJavaScript($input.path('$.note')).replaceAll(\"\\\\'\",\"'\")\"}}}",
                None,
            ),
            // EventBridge: a nested object printed whole is a Java map.
            (
                "javamap",
                "aws:events:PutEvents",
                "bus",
                "#set($b = $input.path('$'))\n{\"Entries\": [{\"Source\": \"web\", \"DetailType\": \"click\", \"Detail\": \"$b.detail\"}]}",
                Some(detail_model),
            ),
            // A body wrapped in a second pair of braces.
            (
                "braces",
                "kinesis:PutRecord",
                "clicks",
                "{{\"StreamName\": \"clicks\", \"Data\": \"$util.base64Encode($input.body)\", \"PartitionKey\": \"k\"}}",
                None,
            ),
            // A value from the body written into a JSON string as it is.
            (
                "unescaped",
                "kinesis:PutRecord",
                "clicks",
                "{\"StreamName\": \"clicks\", \"Data\": \"$util.base64Encode($input.body)\", \"PartitionKey\": \"$input.path('$.user')\"}",
                None,
            ),
            // Kinesis Data that is not base64.
            (
                "nobase64",
                "kinesis:PutRecord",
                "clicks",
                "{\"StreamName\": \"clicks\", \"Data\": \"$util.escapeJavaScript($input.path('$.user')).replaceAll(\"\\\\'\",\"'\")\", \"PartitionKey\": \"k\"}",
                None,
            ),
            // SQS's form body with the payload not URL-encoded.
            (
                "form",
                "sqs:SendMessage",
                "q",
                "Action=SendMessage&MessageBody=$input.body",
                None,
            ),
        ],
    );
    let out = p.cli(&["lint"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let found = findings(&out);
    let expect = [
        (
            "POST /sam",
            "escapeJavaScript-apostrophe",
            "it's",
            "replaceAll(\"\\\\'\",\"'\")",
        ),
        (
            "POST /comma",
            "trailing-comma",
            "\"events\"",
            "#if($foreach.hasNext),#end",
        ),
        ("POST /quoted", "quoted-json", "\"id\"", "drop the quotes"),
        (
            "POST /javamap",
            "java-map-printing",
            "lintkey",
            "$input.json('$.path')",
        ),
        (
            "POST /braces",
            "extra-braces",
            "input body",
            "remove the outer",
        ),
        (
            "POST /unescaped",
            "unescaped-string",
            "say \\\"hi\\\"",
            "escapeJavaScript",
        ),
        (
            "POST /nobase64",
            "data-not-base64",
            "input body",
            "base64Encode",
        ),
        (
            "POST /form",
            "unencoded-form-value",
            "input body",
            "urlEncode",
        ),
    ];
    for (route, pitfall, input, fix) in expect {
        let block = found
            .iter()
            .filter(|(r, _)| r == route)
            .map(|(_, b)| b.as_str())
            .find(|b| b.contains(pitfall))
            .unwrap_or_else(|| panic!("{route}: no {pitfall} finding in:\n{text}"));
        assert!(
            block.contains(input),
            "{route}: the input is not shown:\n{block}"
        );
        assert!(
            block.contains("fix: ") && block.contains(fix),
            "{route}: no fix:\n{block}"
        );
        // The output around the fault, with a caret under it.
        assert!(
            block.contains("  output: ") && block.contains('^'),
            "{route}:\n{block}"
        );
    }
    assert!(text.contains("findings in 8 templates"), "{text}");
    // One route by name: only its findings.
    let one = p.cli(&["lint", "POST /sam"]);
    assert_eq!(one.status.code(), Some(1));
    assert_eq!(
        findings(&one).len(),
        1,
        "{}",
        String::from_utf8_lossy(&one.stdout)
    );
    let missing = p.cli(&["lint", "POST /nope"]);
    assert_eq!(missing.status.code(), Some(2));
    // check-config --lint reports the same and fails; check-config alone does not lint.
    let checked = p.cli(&["check-config", "--lint"]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("trailing-comma"));
    assert!(p.cli(&["check-config"]).status.success());
}

#[test]
fn correct_templates_and_the_shipped_example_have_no_findings() {
    let model = r#"{"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": {"type": "object", "properties": {"userId": {"type": "string"}, "count": {"type": "integer"}, "props": {"type": "object"}}}}}}"#;
    let p = project(
        "lint-clean",
        &[
            (
                "batch",
                "kinesis:PutRecords",
                "clicks",
                "#set($b = $input.path('$'))\n{\"StreamName\": \"clicks\", \"Records\": [#foreach($e in $b.events){\"Data\": \"$util.base64Encode($input.json(\"$.events[$foreach.index]\"))\", \"PartitionKey\": \"$util.escapeJavaScript($e.userId).replaceAll(\"\\\\'\",\"'\")\"}#if($foreach.hasNext),#end#end]}",
                Some(model),
            ),
            (
                "order",
                "states:StartExecution",
                SFN,
                "{\"input\": \"$util.escapeJavaScript($input.json('$')).replaceAll(\"\\\\'\",\"'\")\", \"name\": \"$context.requestId\"}",
                None,
            ),
            (
                "count",
                "aws:dynamodb:PutItem",
                "t",
                "{\"TableName\": \"t\", \"Item\": {\"id\": {\"S\": \"$context.requestId\"}, \"n\": {\"N\": \"$input.path('$.n')\"}, \"raw\": {\"S\": \"$util.escapeJavaScript($input.json('$.raw')).replaceAll(\"\\\\'\",\"'\")\"}}, \"total\": $input.json('$.total')}",
                Some(r#"{"type": "object", "properties": {"n": {"type": "number"}}}"#),
            ),
            (
                "message",
                "sqs:SendMessage",
                "q",
                "Action=SendMessage&MessageBody=$util.urlEncode($input.body)&MessageAttribute.1.Name=partner&MessageAttribute.1.Value.StringValue=$util.urlEncode($input.params('partner'))\n",
                None,
            ),
        ],
    );
    let out = p.cli(&["lint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lint: no findings (4 templates)"));
    // The example API this repository ships.
    let example = support::Project::new("lint-example");
    let out = example.cli(&["lint"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lint: no findings"));
}

#[test]
fn import_openapi_prints_the_findings_of_an_export() {
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "orders", "version": "1"},
        "paths": {"/orders": {"post": {
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "aws",
                "httpMethod": "POST",
                "uri": "arn:aws:apigateway:us-east-1:states:action/StartExecution",
                "requestTemplates": {"application/json": "{\"input\": \"$util.escapeJavaScript($input.json('$'))\", \"stateMachineArn\": \"arn:aws:states:us-east-1:000000000000:stateMachine:orders\"}"},
                "responses": {"default": {"statusCode": "200"}}
            }
        }}}
    });
    let dir = std::env::temp_dir().join(support::unique("ingest-gateway-lint-import-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("export.json"), doc.to_string()).unwrap();
    let report = support::import_openapi(&dir.join("export.json"), &dir.join("imported"));
    assert!(report.contains("break on some inputs"), "{report}");
    assert!(report.contains("escapeJavaScript-apostrophe"), "{report}");
    assert!(
        report.contains("fix: $util.escapeJavaScript($x).replaceAll"),
        "{report}"
    );
}
