//! Reading a rendered template as a service request: JSON with AWS field names, or (SQS)
//! the form encoding API Gateway templates produce. Pure functions.

use base64::Engine as _;
use serde_json::{Map, Value as Json};

use super::{Action, IntegrationError};

/// The rendered body as a JSON object.
pub fn json_object(action: Action, rendered: &str) -> Result<Map<String, Json>, IntegrationError> {
    match serde_json::from_str::<Json>(rendered) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(action, "expected a JSON object")),
        Err(e) => Err(invalid(action, format!("not JSON: {e}"))),
    }
}

pub fn invalid(action: Action, detail: impl Into<String>) -> IntegrationError {
    IntegrationError::InvalidRequest {
        action,
        detail: detail.into(),
    }
}

/// A rendered request this request's content made invalid (no records, ids that repeat):
/// the client's to fix (400), unlike a template that renders nonsense for every request.
pub fn unmappable(action: Action, detail: impl Into<String>) -> IntegrationError {
    IntegrationError::Unmappable {
        action,
        detail: detail.into(),
    }
}

/// A batch request's list field (`Records`, `Entries`): an array of 1 to `max` items, each
/// called a `noun` in the error.
pub fn batch_items<'a>(
    action: Action,
    m: &'a Map<String, Json>,
    field: &str,
    max: usize,
    noun: &str,
) -> Result<&'a [Json], IntegrationError> {
    let Some(Json::Array(items)) = m.get(field) else {
        return Err(invalid(action, format!("{field} must be an array")));
    };
    if items.is_empty() || items.len() > max {
        return Err(unmappable(
            action,
            format!("{field} must hold 1 to {max} {noun}, not {}", items.len()),
        ));
    }
    Ok(items)
}

/// Item `i` of a batch list field, which must be an object.
pub fn batch_item<'a>(
    action: Action,
    item: &'a Json,
    field: &str,
    i: usize,
) -> Result<&'a Map<String, Json>, IntegrationError> {
    match item {
        Json::Object(m) => Ok(m),
        _ => Err(invalid(action, format!("{field}[{i}] must be an object"))),
    }
}

/// A required string field.
pub fn string<'a>(
    action: Action,
    m: &'a Map<String, Json>,
    field: &str,
) -> Result<&'a str, IntegrationError> {
    match m.get(field) {
        Some(Json::String(s)) if !s.is_empty() => Ok(s),
        Some(Json::String(_)) => Err(invalid(action, format!("{field} is empty"))),
        Some(_) => Err(invalid(action, format!("{field} must be a string"))),
        None => Err(invalid(action, format!("{field} is missing"))),
    }
}

/// An optional string field.
pub fn opt_string<'a>(
    action: Action,
    m: &'a Map<String, Json>,
    field: &str,
) -> Result<Option<&'a str>, IntegrationError> {
    match m.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(action, format!("{field} must be a string"))),
    }
}

/// A base64 `Data` field, decoded.
pub fn data(
    action: Action,
    m: &Map<String, Json>,
    field: &str,
) -> Result<Vec<u8>, IntegrationError> {
    let text = string(action, m, field)?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| invalid(action, format!("{field} is not base64: {e}")))
}

/// A record of the client's that the service would refuse for its size (413).
pub fn too_large(
    action: Action,
    index: usize,
    size: usize,
    limit: usize,
    what: &str,
) -> IntegrationError {
    IntegrationError::RecordRefused {
        action,
        index,
        reason: format!("is {size} bytes{what}; {action} accepts at most {limit} per record"),
        too_large: true,
    }
}

/// Splits items into runs of at most `max_items` items and `max_bytes` bytes (by `size`);
/// an item larger than `max_bytes` on its own goes alone (the caller checked each item's
/// own limit).
pub fn calls<T>(
    items: &[T],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_items || bytes + n > max_bytes) {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Sends `items` in as many calls as the caps require, one after another, and puts the
/// outcomes back together in order.
pub async fn in_calls<'a, T, O, F, Fut>(
    items: &'a [T],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
    mut call: F,
) -> Result<Vec<O>, IntegrationError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<O>, IntegrationError>>,
{
    let mut outcomes = Vec::with_capacity(items.len());
    for part in calls(items, max_items, max_bytes, size) {
        outcomes.extend(call(part).await?);
    }
    Ok(outcomes)
}

/// Checks a name the template chose against the route's configured target (a name or an
/// ARN ending in `/name` or `:name`).
pub fn check_target(
    action: Action,
    configured: Option<&str>,
    rendered: &str,
) -> Result<(), IntegrationError> {
    let Some(configured) = configured else {
        return Ok(());
    };
    let name = |s: &str| s.rsplit(['/', ':']).next().unwrap_or(s).to_string();
    if name(configured) == name(rendered) {
        Ok(())
    } else {
        Err(invalid(
            action,
            format!("it names {rendered:?} but the route may only write to {configured:?}"),
        ))
    }
}

/// The name to use: the route's target when it has one (a template that names another is
/// refused), else the template's. The target wins even when the template names the same
/// resource: names are compared by their last segment, so a rendered ARN or URL of another
/// account or region with the same name would otherwise redirect the write.
pub fn resolve_target<'a>(
    action: Action,
    configured: Option<&'a str>,
    rendered: Option<&'a str>,
    field: &str,
) -> Result<&'a str, IntegrationError> {
    match (rendered, configured) {
        (Some(r), Some(c)) => {
            check_target(action, configured, r)?;
            Ok(c)
        }
        (Some(r), None) => Ok(r),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(invalid(
            action,
            format!("{field} is missing and the route has no target"),
        )),
    }
}

/// Parses `application/x-www-form-urlencoded` text into ordered pairs.
pub fn form_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.trim()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

/// Form decoding, lenient like API Gateway's SQS integration: a `%` not followed by two hex
/// digits is kept as is, so raw JSON bodies that were not URL-encoded still arrive intact.
fn form_decode(s: &str) -> Result<String, String> {
    crate::mapping::util::percent_decode(s, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_by_name_or_arn() {
        let a = Action::KinesisPutRecord;
        assert!(check_target(a, Some("clicks"), "clicks").is_ok());
        assert!(
            check_target(
                a,
                Some("arn:aws:kinesis:us-east-1:1:stream/clicks"),
                "clicks"
            )
            .is_ok()
        );
        assert!(
            check_target(
                a,
                Some("clicks"),
                "arn:aws:kinesis:us-east-1:1:stream/clicks"
            )
            .is_ok()
        );
        assert!(check_target(a, Some("clicks"), "other").is_err());
        assert!(check_target(a, None, "anything").is_ok());
    }

    #[test]
    fn a_rendered_arn_or_url_never_replaces_the_target() {
        let a = Action::SqsSendMessage;
        let elsewhere = "https://sqs.eu-west-1.amazonaws.com/999999999999/partner-messages";
        assert_eq!(
            resolve_target(a, Some("partner-messages"), Some(elsewhere), "QueueUrl").unwrap(),
            "partner-messages"
        );
        let s = Action::StatesStartExecution;
        assert_eq!(
            resolve_target(
                s,
                Some("orders"),
                Some("arn:aws:states:us-east-1:999999999999:stateMachine:orders"),
                "stateMachineArn"
            )
            .unwrap(),
            "orders"
        );
        assert_eq!(
            resolve_target(a, None, Some(elsewhere), "QueueUrl").unwrap(),
            elsewhere
        );
        assert!(resolve_target(a, Some("q"), Some("other"), "QueueUrl").is_err());
    }

    #[test]
    fn form_decoding() {
        let pairs =
            form_pairs("Action=SendMessage&MessageBody=%7B%22a%22%3A+1%7D&X=50%&Empty=").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("Action".into(), "SendMessage".into()),
                ("MessageBody".into(), "{\"a\": 1}".into()),
                ("X".into(), "50%".into()),
                ("Empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn batch_lists_are_bounded_arrays_of_objects() {
        let action = Action::KinesisPutRecords;
        let detail = |e: IntegrationError| match e {
            IntegrationError::InvalidRequest { detail, .. }
            | IntegrationError::Unmappable { detail, .. } => detail,
            other => panic!("{other:?}"),
        };
        let m = |text: &str| json_object(action, text).unwrap();
        let ok = m(r#"{"Records": [{"Data": "e30="}, {}]}"#);
        assert_eq!(
            batch_items(action, &ok, "Records", 500, "records")
                .unwrap()
                .len(),
            2
        );
        let err = |text: &str, max| {
            detail(batch_items(action, &m(text), "Records", max, "records").unwrap_err())
        };
        assert_eq!(err(r#"{"Records": {}}"#, 500), "Records must be an array");
        assert_eq!(err("{}", 500), "Records must be an array");
        assert_eq!(
            err(r#"{"Records": []}"#, 500),
            "Records must hold 1 to 500 records, not 0"
        );
        assert_eq!(
            err(r#"{"Records": [1, 2, 3]}"#, 2),
            "Records must hold 1 to 2 records, not 3"
        );
        assert!(batch_item(action, &serde_json::json!({}), "Entries", 0).is_ok());
        assert_eq!(
            detail(batch_item(action, &serde_json::json!("x"), "Entries", 3).unwrap_err()),
            "Entries[3] must be an object"
        );
    }
}
