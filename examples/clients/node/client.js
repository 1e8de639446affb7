#!/usr/bin/env node
// An llm-sidecar client in Node.js (@grpc/grpc-js + @grpc/proto-loader):
// one unary call, one streaming call, and errors handled by their gRPC
// status code. The .proto files are loaded at run time: no code generation.
//
//   node client.js "hello from my pod"
//
// Exit status: 0 when both calls succeeded (or, with --expect-code, when
// both failed with that code), 1 otherwise, so scripts and tests can rely on it.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const DEFAULT_TARGET = 'unix:///run/llm-sidecar/llm-sidecar.sock';
const PROTO_DIR = process.env.LLM_SIDECAR_PROTO_DIR || path.resolve(__dirname, '../../../proto');

// What a caller should do about each code the sidecar returns (README,
// "Errors"). The sidecar has already retried what may pass, so a caller does
// not stack its own retry loop on top: it reschedules the work (honouring
// RetryInfo), fixes the request, or tells an operator.
const ADVICE = {
  [grpc.status.INVALID_ARGUMENT]: 'the request is wrong: fix it, do not retry',
  [grpc.status.NOT_FOUND]: 'no route for this model: check the model name',
  [grpc.status.FAILED_PRECONDITION]: "the sidecar's provider key or config is wrong: tell the operator",
  [grpc.status.RESOURCE_EXHAUSTED]: 'rate limit, quota or queue full: try again later',
  [grpc.status.UNAVAILABLE]: 'the provider failed or the sidecar is stopping: try again later',
  [grpc.status.DEADLINE_EXCEEDED]: 'too slow for the deadline: a longer deadline or a shorter answer',
};

// The google.rpc messages the sidecar puts in `grpc-status-details-bin`
// (field numbers as in googleapis' google/rpc/status.proto and
// error_details.proto), declared here to avoid a dependency for three
// messages; Any and Duration come with protobufjs.
const rpcTypes = new protobuf.Root();
for (const file of ['google/protobuf/any.proto', 'google/protobuf/duration.proto']) {
  rpcTypes.addJSON(protobuf.common.get(file).nested);
}
protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message RetryInfo { google.protobuf.Duration retry_delay = 1; }
`, rpcTypes, { keepCase: true });

function loadChatService() {
  const definition = protoLoader.loadSync('llmsidecar/v1/chat.proto', {
    includeDirs: [PROTO_DIR],
    // Keep field names as in the .proto, enums as their names.
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).llmsidecar.v1.ChatService;
}

function connect(ChatService, target) {
  return new ChatService(target, grpc.credentials.createInsecure());
}

function requestFor(model, prompt) {
  return {
    model,
    messages: [{ role: 'ROLE_USER', content: prompt }],
    // Attribution tags for the sidecar's usage ledger; never sent upstream.
    metadata: { app: 'example-node-client' },
  };
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function complete(chat, model, prompt, timeout) {
  return new Promise((resolve, reject) => {
    const call = chat.Complete(requestFor(model, prompt), { deadline: deadline(timeout) }, (error, response) => {
      if (error) return reject(error);
      const answer = response.choices.length ? response.choices[0].content : '';
      console.log(answer);
      resolve(answer);
    });
    call.on('metadata', (metadata) => {
      const get = (key) => metadata.get(key)[0] ?? '?';
      console.log(`[unary] provider=${get('x-llm-provider')} attempts=${get('x-llm-attempts')}`);
    });
  });
}

function stream(chat, model, prompt, timeout) {
  return new Promise((resolve, reject) => {
    const parts = [];
    process.stdout.write('[stream] ');
    const call = chat.StreamComplete(requestFor(model, prompt), { deadline: deadline(timeout) });
    call.on('data', (chunk) => {
      for (const choice of chunk.choices) {
        parts.push(choice.content);
        process.stdout.write(choice.content);
      }
    });
    // 'error' and 'status' both fire on failure: settle on 'status', the end
    // of the call, which for OK means the sidecar saw the upstream's end (a
    // cut stream ends with an error instead).
    call.on('error', () => {});
    call.on('status', (status) => {
      process.stdout.write('\n');
      if (status.code === grpc.status.OK) return resolve(parts.join(''));
      const error = new Error(status.details);
      Object.assign(error, status);
      reject(error);
    });
  });
}

// One line for a failed call: code, the sidecar's reason, what to do.
function describe(error) {
  const codeName = grpc.status[error.code] ?? String(error.code);
  let line = `${codeName}: ${error.details}`;
  const [raw] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (raw) {
    const status = rpcTypes.lookupType('google.rpc.Status').decode(raw);
    for (const detail of status.details) {
      if (detail.type_url.endsWith('/google.rpc.ErrorInfo')) {
        line += ` [reason=${rpcTypes.lookupType('google.rpc.ErrorInfo').decode(detail.value).reason}]`;
      } else if (detail.type_url.endsWith('/google.rpc.RetryInfo')) {
        const delay = rpcTypes.lookupType('google.rpc.RetryInfo').decode(detail.value).retry_delay;
        const seconds = Number(delay?.seconds ?? 0) + (delay?.nanos ?? 0) / 1e9;
        line += ` [retry after ${seconds}s]`;
      }
    }
  }
  if (error.metadata && error.metadata.get('x-llm-partial')[0] === 'true') {
    // A stream cut after some output: what arrived is not the whole answer.
    line += ` [partial: ${error.metadata.get('x-llm-chunks-sent')[0] ?? '?'} chunks arrived]`;
  }
  return `${line}; ${ADVICE[error.code] ?? 'unexpected: report it'}`;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: 'string', default: process.env.LLM_SIDECAR_TARGET || DEFAULT_TARGET },
      model: { type: 'string', default: 'mock/echo' },
      timeout: { type: 'string', default: '60' },
      expect: { type: 'string' },
      'expect-code': { type: 'string' },
    },
  });
  const prompt = positionals[0] ?? 'hello from my pod';
  const timeout = Number(values.timeout);
  const expectCode = values['expect-code'];

  const chat = connect(loadChatService(), values.target);
  let ok = true;
  for (const [name, call] of [['unary', complete], ['stream', stream]]) {
    let answer;
    try {
      answer = await call(chat, values.model, prompt, timeout);
    } catch (error) {
      console.error(`[${name}] error: ${describe(error)}`);
      ok &&= expectCode === grpc.status[error.code];
      continue;
    }
    if (expectCode) {
      console.error(`[${name}] expected ${expectCode}, the call succeeded`);
      ok = false;
    } else if (values.expect !== undefined && answer !== values.expect) {
      console.error(`[${name}] expected ${JSON.stringify(values.expect)}, got ${JSON.stringify(answer)}`);
      ok = false;
    }
  }
  chat.close();
  return ok ? 0 : 1;
}

main().then(
  (code) => { process.exitCode = code; },
  (error) => { console.error(error); process.exitCode = 1; },
);
