//! The one internal chat model every edge converts into and out of.
//!
//! Its serde form *is* the OpenAI chat-completions wire format, the de-facto
//! lingua franca of LLM providers: the OpenAI-compatible upstream sends and
//! reads it with no further mapping, and `extra` carries fields we do not
//! model through untouched in both directions.

mod request;
mod response;

pub use request::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDefinition, ImageUrl,
    JsonSchemaFormat, Message, NamedFunction, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
};
pub use response::{
    ChatChunk, ChatResponse, Choice, ChoiceDelta, CompletionTokensDetails, Delta,
    PromptTokensDetails, ResponseMessage, ToolCallDelta, ToolCallFunctionDelta, Usage,
};
