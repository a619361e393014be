//! The OpenAPI 3.1 document of the JSON API, made from the routes themselves.
//!
//! Each JSON handler carries its `#[utoipa::path]` and is routed with `utoipa_axum::routes!`
//! through [`Routes::doc`], so a route and its description are added in one call; pages, static
//! files, health and metrics go through [`Routes::page`]. [`finish`] then adds what operations
//! share, from the same facts the router applies: the admin token on every `/api` route, and
//! the one error shape for the statuses every route, body or path parameter can answer.

use axum::Extension;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, ResponseBuilder, Tag};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::AppState;
use utoipa::{PartialSchema, ToSchema};

use super::error::ErrorBody;

/// Where the document is served: the one `/api` route without a token.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";

/// The security scheme of the admin API.
const ADMIN_TOKEN: &str = "admin_token";

/// The app's routes while they are built, and the path of each, documented or not: the contract
/// test walks these and checks every JSON route against the document.
pub struct Routes {
    router: OpenApiRouter<AppState>,
    paths: Vec<String>,
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            router: OpenApiRouter::with_openapi(base()),
            paths: Vec::new(),
        }
    }

    /// A documented route (`utoipa_axum::routes!(handler, …)`, one path).
    pub fn doc(mut self, (schemas, paths, method_router): UtoipaMethodRouter<AppState>) -> Self {
        self.paths.extend(paths.paths.keys().cloned());
        self.router = self.router.routes((schemas, paths, method_router));
        self
    }

    /// A documented route whose method router needs layers of its own (a rate limit, CORS).
    pub fn doc_with(
        self,
        (schemas, paths, method_router): UtoipaMethodRouter<AppState>,
        layers: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Self {
        self.doc((schemas, paths, layers(method_router)))
    }

    /// A route outside the contract: an HTML page, a static file, health or metrics.
    pub fn page(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.paths.push(path.to_owned());
        self.router = self.router.route(path, method_router);
        self
    }

    /// Applies router-wide changes (layers, fallbacks) to every route added so far.
    pub fn with(mut self, f: impl FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }

    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.paths
            .extend(other.paths.into_iter().map(|p| format!("{prefix}{p}")));
        self.router = self.router.nest(prefix, other.router);
        self
    }

    /// The router with the document served at [`DOCUMENT_PATH`], and every route's path.
    pub fn finish(self) -> (axum::Router<AppState>, OpenApi, Vec<String>) {
        let Routes { router, mut paths } = self.doc(utoipa_axum::routes!(document));
        let (router, mut openapi) = router.split_for_parts();
        complete(&mut openapi);
        let json = openapi.to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialise");
            "{}".to_owned()
        });
        paths.sort();
        paths.dedup();
        (router.layer(Extension(Document(json.into()))), openapi, paths)
    }
}

/// The serialised document, made once at start-up.
#[derive(Clone)]
pub struct Document(std::sync::Arc<str>);

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "contract",
    security(()),
    responses((status = 200, description = "This document.", content_type = "application/json", body = Object)),
)]
async fn document(Extension(Document(json)): Extension<Document>) -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

fn base() -> OpenApi {
    let mut openapi = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Bulletin")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The newsletter backend of a news site: signups with double opt-in, one-click \
                     unsubscribe, feeds and digests. Public routes take JSON or a form and answer \
                     JSON when the body is JSON or `Accept` names `application/json`, else a page. \
                     Every `/api` route but this document needs `Authorization: Bearer <token>` \
                     (BULLETIN_ADMIN_TOKEN). Every JSON error has one shape: `Error`.",
                ))
                .build(),
        )
        .build();
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ADMIN_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("Any token of BULLETIN_ADMIN_TOKEN."))
                .build(),
        ),
    );
    openapi.tags = Some(
        [
            ("signup", "A reader's signup, confirmation and unsubscribe."),
            ("lists", "Newsletter lists and their subscribers."),
            ("feeds", "Feeds polled for a list, and pushed items."),
            ("digests", "Digests: queue, watch, cancel, preview, test."),
            ("schedules", "A list's digest schedule."),
            ("readers", "One address's data, its erasure, and suppressions."),
            ("contract", "This document."),
        ]
        .into_iter()
        .map(|(name, description)| {
            let mut tag = Tag::new(name);
            tag.description = Some(description.to_owned());
            tag
        })
        .collect(),
    );
    openapi
}

/// A status that routes share, and when an operation can answer it.
struct Shared {
    status: u16,
    description: &'static str,
    applies: fn(&str, &Operation) -> bool,
}

const SHARED: &[Shared] = &[
    Shared {
        status: 400,
        description: "The body could not be read or parsed (`invalid_json`, `too_deeply_nested`, \
                      `too_many_fields`, `bad_request`).",
        applies: |_, op| op.request_body.is_some(),
    },
    Shared {
        status: 401,
        description: "No valid admin token (`unauthorized`).",
        applies: |path, _| is_admin(path),
    },
    Shared {
        status: 404,
        description: "Nothing is there (`not_found`, or what the path names does not exist).",
        applies: |path, _| path.contains('{'),
    },
    Shared {
        status: 408,
        description: "The request took longer than BULLETIN_REQUEST_TIMEOUT (`request_timeout`).",
        applies: |_, _| true,
    },
    Shared {
        status: 413,
        description: "The body is over the route's limit (`payload_too_large`).",
        applies: |_, op| op.request_body.is_some(),
    },
    Shared {
        status: 415,
        description: "The body is of a content type this route does not take (`unsupported_media_type`).",
        applies: |_, op| op.request_body.is_some(),
    },
    Shared {
        status: 422,
        description: "A field is missing or invalid; `field` names it.",
        applies: |_, op| op.request_body.is_some(),
    },
    Shared {
        status: 500,
        description: "A fault on the server (`internal`); the details are in its log.",
        applies: |_, _| true,
    },
    Shared {
        status: 503,
        description: "The database did not answer in time; nothing was changed (`unavailable`).",
        applies: |_, _| true,
    },
];

fn is_admin(path: &str) -> bool {
    path.starts_with("/api/") && path != DOCUMENT_PATH
}

/// Adds to every operation what the router gives it: the admin token on `/api`, and the shared
/// error statuses it can answer (an operation's own description of a status is kept).
fn complete(openapi: &mut OpenApi) {
    let error_ref = || RefOr::Ref(Ref::from_schema_name("Error"));
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            if is_admin(path) {
                operation.security = Some(vec![SecurityRequirement::new(ADMIN_TOKEN, Vec::<String>::new())]);
            }
            let applying: Vec<&Shared> = SHARED.iter().filter(|s| (s.applies)(path, operation)).collect();
            for shared in applying {
                let key = shared.status.to_string();
                if operation.responses.responses.contains_key(&key) {
                    continue;
                }
                let mut response = ResponseBuilder::new().description(shared.description).content(
                    "application/json",
                    ContentBuilder::new().schema(Some(error_ref())).build(),
                );
                // Public routes answer a page to a form post or a browser.
                if !path.starts_with("/api/") {
                    response = response.content("text/html", ContentBuilder::new().schema(Some(html())).build());
                }
                if shared.status == 401 {
                    response = response.header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .description(Some("`Bearer`"))
                            .schema(Some(html()))
                            .build(),
                    );
                }
                operation.responses.responses.insert(key, response.into());
            }
        }
    }
    // The schema of every error, referenced above.
    let components = openapi.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(ErrorBody::name().into_owned(), ErrorBody::schema())];
    ErrorBody::schemas(&mut schemas);
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
}

fn html() -> RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::Object::with_type(utoipa::openapi::schema::Type::String).into()
}
