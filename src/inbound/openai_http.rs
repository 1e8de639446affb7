//! The OpenAI-compatible HTTP edge (being written).

use crate::pipeline::Pipeline;
use std::sync::Arc;

/// The facade's routes over the shared pipeline.
pub fn router(_pipeline: Arc<Pipeline>) -> axum::Router {
    axum::Router::new()
}
