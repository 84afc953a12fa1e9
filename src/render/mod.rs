//! The render stage: API Gateway's template selection (by media type, with its passthrough
//! rules) and the request template's render, with `$input`, `$util`, `$context` and
//! `$stageVariables` over the request ([`context`] builds the last two views only when a
//! template reads them). The interpreter itself is `vtl`; the views are `mapping`'s.

pub mod context;

use serde_json::Value as Json;

use crate::config::{Config, Passthrough, RouteConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::mapping::{self, MappingInput};
use crate::validate::body::Body;
use crate::vtl::{self, Template};
pub use context::RequestView;

/// A request template's output: what is sent upstream, and its `$context.responseOverride`.
#[derive(Debug)]
pub struct Rendered {
    pub body: String,
    pub overrides: Option<Json>,
}

/// API Gateway's template selection and passthrough rules: the template for the request's
/// media type, none (the body passes through as it is), or 415.
pub fn choose_template<'a>(
    route: &RouteConfig,
    templates: &'a [(String, std::sync::Arc<Template>)],
    media: &str,
) -> Result<Option<&'a Template>, GatewayError> {
    if let Some((_, t)) = templates.iter().find(|(m, _)| m == media) {
        return Ok(Some(t));
    }
    let pass = match route.passthrough {
        Passthrough::WhenNoMatch => true,
        Passthrough::WhenNoTemplates => templates.is_empty(),
        Passthrough::Never => false,
    };
    if pass {
        Ok(None)
    } else {
        Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType {
                accepted: templates.iter().map(|(m, _)| m.clone()).collect(),
            },
            format!("no request template for {media}"),
        ))
    }
}

/// A render failure: a template that does not compile is the configuration's fault (500);
/// one that compiled but failed on this request failed on what the request holds (400, with
/// the reason but not the template's text; the log has both).
fn render_error(e: &vtl::Error) -> GatewayError {
    let kind = match e.kind() {
        vtl::ErrorKind::Syntax => ErrorKind::Template,
        _ => ErrorKind::Unmappable {
            message: format!("The request body could not be mapped: {}", e.detail()),
        },
    };
    GatewayError::new(kind, format!("{e}"))
}

/// Renders the request template over the body (or passes the body through without one).
pub fn request(
    template: Option<&Template>,
    body: Body<'_>,
    view: &RequestView<'_>,
    config: &Config,
) -> Result<Rendered, GatewayError> {
    let Some(t) = template else {
        return Ok(Rendered {
            body: body.text.into_owned(),
            overrides: None,
        });
    };
    let params = || view.params();
    let context = || view.context();
    let input = MappingInput {
        body: &body.text,
        params: &params,
        stage_variables: &config.stage_variables,
        context: &context,
    };
    let r = match body.document {
        Some(d) => mapping::render_document(t, &input, d, &config.limits),
        None => mapping::render(t, &input, &config.limits),
    }
    .map_err(|e| render_error(&e))?;
    let overrides = r.context.as_ref().map(|c| c["responseOverride"].clone());
    Ok(Rendered {
        body: r.body,
        overrides,
    })
}
