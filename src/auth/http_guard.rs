//! The checks of the HTTP listeners (the facade on TCP and on its Unix
//! socket, the admin port), as an axum middleware in front of the routes.

use super::{AuthenticatedCaller, Gate, Listener, Refusal};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, header};
use std::sync::Arc;

/// The admin port's gRPC services, which only read: no admin token.
const READ_ONLY_GRPC: [&str; 2] = ["/llmsidecar.v1.AdminService/", "/grpc.health.v1.Health/"];

/// Refuses what `listener` does not serve (see the module doc of
/// [`crate::auth`]), and marks a chat request's caller token.
pub async fn guard(
    State((gate, listener)): State<(Arc<Gate>, Listener)>,
    mut request: Request,
    next: Next,
) -> Response {
    match check(&gate, listener, &request) {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(AuthenticatedCaller(caller));
        }
        Ok(None) => {}
        Err(refusal) => return refused(listener, &refusal),
    }
    next.run(request).await
}

fn check(gate: &Gate, listener: Listener, request: &Request) -> Result<Option<Arc<str>>, Refusal> {
    let headers = request.headers();
    // HTTP/2 carries the host in `:authority`, which hyper puts in the URI.
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
        });
    let origin = headers.get(header::ORIGIN).map(|origin| {
        origin
            .to_str()
            .map_or_else(|_| "<not text>".into(), str::to_owned)
    });
    gate.browser(listener, authority, origin.as_deref())?;
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("<not text>"));
    match listener {
        Listener::Admin => {
            // Its gRPC services (usage, health) only read; known by path,
            // not by what the request says it is.
            let path = request.uri().path();
            let read_only_grpc = READ_ONLY_GRPC.iter().any(|prefix| path.starts_with(prefix));
            if !reads && !read_only_grpc {
                gate.admin(headers)?;
            }
            Ok(None)
        }
        // A CORS preflight carries no token; the CORS layer behind this
        // one answers it for the configured origins only.
        _ if request.method() == Method::OPTIONS => Ok(None),
        Listener::Http | Listener::HttpUds | Listener::GrpcTcp => {
            // A body must say it is JSON: browsers send text, forms and
            // untyped bodies (a Blob) across origins without asking first.
            let has_body = headers.contains_key(header::TRANSFER_ENCODING)
                || headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|length| length.as_bytes() != b"0");
            if !reads && has_body && !content_type.is_some_and(super::host::is_json) {
                let kind = content_type.unwrap_or("none").to_owned();
                return Err(gate.refused(listener, Refusal::NotJson(kind)));
            }
            gate.caller(listener, headers)
        }
    }
}

/// The refusal as the listener speaks: an OpenAI error object on the
/// facade (the SDKs raise `AuthenticationError` on its 401), the admin
/// port's `{"error": "..."}` there.
fn refused(listener: Listener, refusal: &Refusal) -> Response {
    let message = refusal.message();
    let body = match listener {
        Listener::Admin => serde_json::json!({ "error": message }),
        _ => serde_json::json!({
            "error": {
                "message": message,
                "type": match refusal.http_status().as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    _ => "invalid_request_error",
                },
                "param": null,
                "code": refusal.reason(),
            }
        }),
    };
    let mut response = (refusal.http_status(), axum::Json(body)).into_response();
    if refusal.http_status() == http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// CORS for the configured browser origins (`[auth] allowed_origins`),
/// read at each request so a reload applies: preflights answered, the
/// origin echoed. No origin configured: no CORS headers at all.
pub fn cors(gate: Arc<Gate>) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|origin| gate.origin_allowed(origin))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            http::HeaderName::from_static(super::TOKEN_HEADER),
        ])
}
