//! The edges callers come in by. Each converts its wire format into the
//! internal chat model, calls the pipeline, and converts back.

pub mod budget_headers;
mod gather;
pub mod grpc;
pub mod observe;
pub mod openai_http;
pub mod retry_advice;
