"""API layer: the OpenAI-compatible server answers as the documents expect (seed 003 6.4, seed 004 phase 3)."""
from __future__ import annotations

import pytest

from specs import checks

pytestmark = pytest.mark.layer("api")


@pytest.fixture(scope="module")
def client(service):
    with service.client(timeout=120) as c:
        yield c


@pytest.mark.req("R003-6.4-v1-models", "R003-4-server-config", "R004-Ph3.T1-api-endpoints")
def test_models_lists_the_served_model(client, service, evidence):
    r = client.get("/v1/models")
    evidence("GET /v1/models", text=r.text)
    ids = [m["id"] for m in r.json()["data"]] if r.status_code == 200 else []
    why = checks.model_listed(r.status_code, ids, service.served_model)
    assert not why, why


@pytest.mark.req("R004-Ph3.T2-e2e-inference", "R003-6.4-fp8-inference")
def test_completion_returns_the_requested_tokens(client, service):
    r = client.post("/v1/completions", json={"model": service.served_model, "prompt": "hello world",
                                             "max_tokens": 16, "temperature": 0, "ignore_eos": True})
    body = r.json() if r.status_code == 200 else {"usage": {}, "choices": [{}]}
    why = checks.completion(r.status_code, body["usage"], body["choices"][0].get("finish_reason"), 16)
    assert not why, f"{why}: {r.text[:300]}"


@pytest.mark.req("R003-6.5-sampler-ab-benchmark")
def test_the_served_sampler_applies_top_k(client, service, evidence):
    """The sampler A/B (seed 003 6.5) compares like with like only if the sampler-on engine applies the request's
    top-k/top-p as the sampler-off one does. vLLM 0.10.2's V0 engine with VLLM_USE_FLASHINFER_SAMPLER=1 skips the
    top-k/top-p masking and samples from the whole vocabulary (its "Falling back to PyTorch-native implementation").
    At temperature 1, top_k 1 leaves one token a step: the completion must be the greedy one."""
    # a prompt shorter than one KV-cache block: no prefix-cache hit, so every request computes the same logits
    base = {"model": service.served_model, "prompt": "hello world", "max_tokens": 12, "ignore_eos": True,
            # special tokens stay in the text: a dummy-weight model's greedy tokens may all be special ones, which
            # would decode to "" whichever were drawn
            "skip_special_tokens": False}

    def text(**sampling) -> str:
        r = client.post("/v1/completions", json={**base, **sampling})
        return r.json()["choices"][0]["text"] if r.status_code == 200 else f"<status {r.status_code}: {r.text[:120]}>"

    greedy = text(temperature=0)
    restricted = [text(temperature=1.0, top_k=1) for _ in range(2)]
    evidence("completions", text=f"greedy: {greedy!r}\ntop_k 1, temperature 1: {restricted!r}")
    why = checks.top_k_applied(greedy, restricted)
    assert not why, why


@pytest.mark.req("R004-Ph3.T1-api-endpoints", "R004-Ph3.2-async-endpoints")
def test_chat_completion_applies_the_chat_template(client, service):
    r = client.post("/v1/chat/completions", json={"model": service.served_model, "max_tokens": 8,
                                                  "messages": [{"role": "user", "content": "hello"}]})
    body = r.json() if r.status_code == 200 else {"usage": {}, "choices": [{"message": {}}]}
    why = checks.chat(r.status_code, body["choices"][0]["message"].get("role"), body["usage"])
    assert not why, f"{why}: {r.text[:300]}"


@pytest.mark.req("R004-Ph3.2-async-endpoints")
def test_streaming_yields_sse_chunks(client, service):
    chunks = 0
    with client.stream("POST", "/v1/completions", json={"model": service.served_model, "prompt": "hi",
                                                        "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks += 1
    why = checks.sse_chunks(chunks)
    assert not why, why


@pytest.mark.req("R004-Ph3.2-error-handling")
@pytest.mark.parametrize("body,status", [
    (b'{"model": "x", "prompt": ', 400),                              # malformed JSON
    ({"model": "nope-not-served", "prompt": "hi", "max_tokens": 4}, 404),
    ({"prompt": "hi", "max_tokens": "x"}, 400),                      # wrong type
    ({"prompt": "hi", "max_tokens": 100000}, 400),                   # beyond max_model_len
], ids=["malformed-json", "unknown-model", "wrong-type", "too-many-tokens"])
def test_bad_requests_get_a_4xx_json_error(client, service, body, status):
    if isinstance(body, dict) and "model" not in body:
        body = {**body, "model": service.served_model}
    r = (client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
         if isinstance(body, bytes) else client.post("/v1/completions", json=body))
    try:
        reply = r.json()
    except ValueError:
        reply = None
    why = checks.error_reply(r.status_code, status, reply)
    assert not why, f"{why}: {r.text[:300]}"


@pytest.mark.req("R004-Ph4.3-monitoring")
def test_metrics_expose_vllm_series(monitoring_endpoint, evidence):
    """/metrics where the monitoring reads it: the server itself; on docker:// the vLLM port Prometheus
    scrapes (nginx, the API's public entry, does not expose /metrics)."""
    with monitoring_endpoint.client(timeout=60) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, f"GET {monitoring_endpoint.base_url}/metrics: {r.status_code} {r.text[:200]}"
    series = sorted({line.split("{")[0].split(" ")[0] for line in r.text.splitlines() if line.startswith("vllm:")})
    evidence("vllm metric series", text="\n".join(series))
    why = checks.metric_series(series)
    assert not why, why
