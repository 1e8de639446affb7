//! `chat` and `models`: a friendly client for trying the sidecar, and for
//! debugging inside a pod with `kubectl exec`.

use crate::client::{chat_client, connect_tcp, connect_uds};
use crate::proto::v1 as pb;
use anyhow::Context as _;
use futures::StreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The sidecar's Unix socket [default: llm-sidecar.sock in the runtime
    /// directory, as `serve` uses it].
    #[arg(long, env = "LLM_SIDECAR_UDS", conflicts_with = "tcp")]
    pub uds: Option<PathBuf>,
    /// The sidecar's TCP address, e.g. 127.0.0.1:50051, instead of the socket.
    #[arg(long)]
    pub tcp: Option<String>,
    /// The caller token for `--tcp` [default: `LLM_SIDECAR_TOKEN`, else the
    /// token file in the runtime directory, as `serve` writes it].
    #[arg(long, env = "LLM_SIDECAR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the caller token for `--tcp` from this file.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

impl Target {
    /// The `authorization` value a TCP call carries; none on the socket,
    /// which needs no token, and none when no token can be found (the
    /// sidecar's refusal then says what to do).
    fn authorization(
        &self,
    ) -> anyhow::Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
        if self.tcp.is_none() {
            return Ok(None);
        }
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(read_token(file)?),
            (None, None) => {
                let file = crate::runtime_dir::default_dir(&crate::config::process_env)
                    .join(crate::auth::TOKEN_FILE);
                read_token(&file).ok()
            }
        };
        token
            .map(|token| {
                format!("Bearer {token}")
                    .parse()
                    .context("the caller token is not printable ASCII")
            })
            .transpose()
    }

    /// `request` with the caller token, when the target needs one.
    fn authorize<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.authorization()? {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The token in `file` (surrounding whitespace dropped).
pub fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the token file {}", file.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        file.display()
    );
    Ok(token.to_owned())
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The prompt.
    pub prompt: String,
    /// The model (or alias) to ask.
    #[arg(long, short, default_value = "mock/echo")]
    pub model: String,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Wait for the whole answer instead of streaming it.
    #[arg(long)]
    pub no_stream: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print token usage to stderr at the end.
    #[arg(long)]
    pub usage: bool,
    #[command(flatten)]
    pub target: Target,
}

async fn connect(target: &Target) -> anyhow::Result<Channel> {
    match &target.tcp {
        Some(addr) => connect_tcp(addr)
            .await
            .with_context(|| format!("cannot connect to the sidecar at {addr}")),
        None => {
            let uds = match &target.uds {
                Some(uds) => uds.clone(),
                None => crate::runtime_dir::default_socket(&crate::config::process_env),
            };
            connect_uds(&uds)
                .await
                .with_context(|| format!("cannot connect to the sidecar at {}", uds.display()))
        }
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mut client = chat_client(connect(&args.target).await?, 64 * 1024 * 1024);
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(text_message(pb::Role::System, system));
    }
    messages.push(text_message(pb::Role::User, &args.prompt));
    let mut request = args.target.authorize(pb::ChatRequest {
        model: args.model.clone(),
        messages,
        ..pb::ChatRequest::default()
    })?;
    request.set_timeout(Duration::from_secs(args.timeout));
    let mut out = std::io::stdout().lock();
    let usage = if args.no_stream {
        let response = client
            .complete(request)
            .await
            .map_err(status_error)?
            .into_inner();
        for choice in &response.choices {
            writeln!(out, "{}", choice.content.as_deref().unwrap_or_default())?;
        }
        response.usage
    } else {
        let mut stream = client
            .stream_complete(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let mut usage = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|status| {
                let _ = writeln!(out);
                status_error(status)
            })?;
            for choice in &chunk.choices {
                write!(out, "{}", choice.content)?;
            }
            out.flush()?;
            usage = chunk.usage.or(usage);
        }
        writeln!(out)?;
        usage
    };
    if let (true, Some(usage)) = (args.usage, usage) {
        eprintln!(
            "usage: {} prompt + {} completion = {} tokens",
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        );
    }
    Ok(())
}

fn text_message(role: pb::Role, text: &str) -> pb::Message {
    pb::Message {
        role: role as i32,
        content: Some(text.to_owned()),
        ..pb::Message::default()
    }
}

pub async fn models(target: Target) -> anyhow::Result<()> {
    let mut client = chat_client(connect(&target).await?, 4 * 1024 * 1024);
    let response = client
        .list_models(target.authorize(pb::ListModelsRequest {})?)
        .await
        .map_err(status_error)?
        .into_inner();
    for model in response.models {
        let target = if model.target.is_empty() {
            String::new()
        } else {
            format!(" -> {}", model.target)
        };
        println!(
            "{:<8} {}{target} => {}",
            model.r#match, model.model, model.provider
        );
    }
    Ok(())
}
