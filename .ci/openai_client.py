"""The official `openai` Python SDK against demo-serving-api: chat and completions, plain and
streamed, the usage chunk, and errors. The SDK must parse everything without complaint.

usage: python openai_client.py PATH/TO/demo-serving-api [--model PATH]
Starts the server on a free loopback port, runs the checks, stops it with SIGTERM and requires
exit status 0.
"""

import re
import signal
import subprocess
import sys

import openai


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok  {what}")


def main():
    server = subprocess.Popen(
        [sys.argv[1], "--port", "0", "--threads", "2", "--kv-mib", "64", *sys.argv[2:]],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        match = re.search(r"http://[^\s]+", line)
        if not match:
            raise AssertionError(f"the server did not print its address: {line!r}")
        run_checks(match.group(0) + "/v1")
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    check(code == 0, f"the server exits 0 on SIGTERM (got {code})")


def run_checks(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    check(bool(model), f"models.list names the model ({model})")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
    text = chat.choices[0].message.content
    check(chat.object == "chat.completion" and bool(text), f"chat completion: {text!r}")
    check(chat.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
    check(chat.usage.completion_tokens > 0 and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "chat usage")

    chunks = list(client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ))
    check(chunks[0].choices[0].delta.role == "assistant", "the first chunk carries the role")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == text, "streamed chat text equals the plain answer")
    check(any(c.choices and c.choices[0].finish_reason for c in chunks), "a chunk carries the finish reason")
    check(chunks[-1].usage is not None and chunks[-1].choices == [], "the last chunk is the usage chunk")
    check(chunks[-1].usage.completion_tokens == chat.usage.completion_tokens, "streamed usage equals plain usage")

    prompt = "The capital of France is"
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    check(completion.object == "text_completion" and completion.choices[0].text, f"completion: {completion.choices[0].text!r}")
    pieces = list(client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True))
    check("".join(p.choices[0].text for p in pieces if p.choices) == completion.choices[0].text, "streamed completion equals plain")

    stopped = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, stop=[completion.choices[0].text.strip()[:3]])
    check(stopped.choices[0].finish_reason == "stop", "a stop string ends the completion with finish_reason stop")

    try:
        client.chat.completions.create(model=model, messages=messages, temperature=5)
        raise AssertionError("temperature 5 was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.param == "temperature" and e.code == "invalid_value", f"400 names the field: {e.message}")
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found", f"404 for an unknown model: {e.message}")


if __name__ == "__main__":
    main()
