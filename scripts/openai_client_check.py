#!/usr/bin/env python3
"""Talks to a running rbees-workerd with the official `openai` Python package.

Usage: openai_client_check.py BASE_URL   (e.g. http://127.0.0.1:8080)

Checks, at temperature 0 with a few tokens:
  (a) a streamed chat completion (the deltas are collected),
  (b) the same chat completion not streamed: its content must equal the
      concatenated deltas of (a),
  (c) a plain completion, streamed and not, which must agree too,
  (d) the model list, which must name the model the answers name.
Prints a JSON summary on stdout; exits 1 on any mismatch, 2 when the
`openai` package is missing.
"""

import json
import sys

try:
    from openai import OpenAI
except ImportError as e:  # the Rust test looks for this message
    print(f"cannot import openai ({e}): run scripts/test.sh, which installs it", file=sys.stderr)
    sys.exit(2)

MAX_TOKENS = 12
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    problems = []
    summary = {"problems": problems}

    # (d) first: the other requests name the listed model.
    models = client.models.list()
    ids = [m.id for m in models.data]
    summary["models"] = ids
    if len(ids) != 1:
        problems.append(f"expected one model, got {ids}")
    model = ids[0] if ids else "unknown"

    # (a) streamed chat.
    deltas = []
    roles = []
    finish = None
    chunk_models = set()
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    for chunk in stream:
        chunk_models.add(chunk.model)
        if chunk.object != "chat.completion.chunk":
            problems.append(f"chunk object {chunk.object!r}")
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(deltas)
    summary["chat_stream"] = {"deltas": len(deltas), "text": streamed, "finish_reason": finish}
    if not deltas:
        problems.append("the streamed chat completion sent no text")
    if roles != ["assistant"]:
        problems.append(f"expected exactly one role delta 'assistant', got {roles}")
    if finish not in ("stop", "length"):
        problems.append(f"streamed chat finish_reason {finish!r}")
    if chunk_models != {model}:
        problems.append(f"chunks name models {chunk_models}, listed {model!r}")

    # (b) the same, not streamed.
    chat = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    content = chat.choices[0].message.content
    summary["chat"] = {
        "text": content,
        "finish_reason": chat.choices[0].finish_reason,
        "usage": chat.usage.model_dump() if chat.usage else None,
    }
    if chat.object != "chat.completion":
        problems.append(f"chat object {chat.object!r}")
    if chat.choices[0].message.role != "assistant":
        problems.append(f"chat role {chat.choices[0].message.role!r}")
    if content != streamed:
        problems.append(f"streamed chat text {streamed!r} != non-streamed {content!r}")
    if chat.choices[0].finish_reason != finish:
        problems.append(f"finish_reason {chat.choices[0].finish_reason!r} != streamed {finish!r}")
    if chat.usage is None or not 0 < chat.usage.completion_tokens <= MAX_TOKENS:
        problems.append(f"chat usage {chat.usage}")
    elif chat.usage.total_tokens != chat.usage.prompt_tokens + chat.usage.completion_tokens:
        problems.append(f"chat usage does not add up: {chat.usage}")

    # (c) a plain completion, not streamed and streamed.
    comp = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0
    )
    comp_text = comp.choices[0].text
    pieces = []
    for chunk in client.completions.create(
        model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
    ):
        for choice in chunk.choices:
            if choice.text:
                pieces.append(choice.text)
    summary["completion"] = {
        "text": comp_text,
        "streamed_text": "".join(pieces),
        "finish_reason": comp.choices[0].finish_reason,
        "usage": comp.usage.model_dump() if comp.usage else None,
    }
    if comp.object != "text_completion":
        problems.append(f"completion object {comp.object!r}")
    if not comp_text:
        problems.append("the completion is empty")
    if "".join(pieces) != comp_text:
        problems.append(f"streamed completion {''.join(pieces)!r} != {comp_text!r}")
    if comp.usage is None or not 0 < comp.usage.completion_tokens <= MAX_TOKENS:
        problems.append(f"completion usage {comp.usage}")

    summary["ok"] = not problems
    print(json.dumps(summary, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
