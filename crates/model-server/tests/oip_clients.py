"""The official OIP v2 clients against a running tally model-server: Triton's tritonclient
(http with and without the binary extension, grpc) and KServe's Python SDK (REST and gRPC).
Each checks health, metadata and an inference against onnxruntime's probabilities for the
reference model (models/fraud/1/check.csv), and the error shapes the clients parse.

    python oip_clients.py <rest host:port> <grpc host:port> <check.csv> <client>

<client> is one of triton-http, triton-grpc, kserve-rest, kserve-grpc: each runs in its own
process (tritonclient and kserve are safest apart: docs/notes/oip-v2.md).
"""

import asyncio
import csv
import sys

import numpy as np

REST, GRPC, CHECK, CLIENT = sys.argv[1:5]
MODEL = "fraud"


def reference():
    with open(CHECK) as f:
        rows = list(csv.DictReader(f))
    names = [k for k in rows[0] if k not in ("label", "probability")]
    x = np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float32)
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    p = np.array([float(r["probability"]) for r in rows], dtype=np.float32)
    return x[:64], labels[:64], p[:64]


X, LABELS, P = reference()


def check(label, proba, what):
    proba = np.asarray(proba).reshape(len(X), 2)
    label = np.asarray(label).reshape(len(X))
    worst = float(np.abs(proba[:, 1] - P).max())
    assert worst < 1e-5, f"{what}: probabilities differ from onnxruntime by {worst}"
    assert (label == LABELS).all(), f"{what}: labels differ"
    print(f"ok {what}: {len(X)} rows, max |dp| {worst:.2e}")


def triton_http():
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    c = http.InferenceServerClient(url=REST)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    meta = c.get_model_metadata(MODEL)
    assert meta["inputs"][0]["name"] == "features" and meta["versions"] == ["1"], meta
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    for binary in (True, False):
        inp = http.InferInput("features", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        outs = [http.InferRequestedOutput("label", binary_data=binary),
                http.InferRequestedOutput("probabilities", binary_data=binary)]
        r = c.infer(MODEL, [inp], outputs=outs, request_id="req-7")
        assert r.get_response()["id"] == "req-7"
        check(r.as_numpy("label"), r.as_numpy("probabilities"), f"tritonclient.http binary={binary}")
    # No outputs named: tritonclient asks for all of them in binary.
    inp = http.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    r = c.infer(MODEL, [inp], model_version="1")
    check(r.as_numpy("label"), r.as_numpy("probabilities"), "tritonclient.http all outputs, version 1")
    for bad, want in [
        (lambda: c.infer("nope", [inp]), "not in the repository"),
        (lambda: c.infer(MODEL, [inp], model_version="9"), "no version"),
        (lambda: c.infer(MODEL, [http.InferInput("x", [1, 17], "FP32").set_data_from_numpy(X[:1])]), "unexpected input"),
    ]:
        try:
            bad()
            raise AssertionError("an error was expected")
        except InferenceServerException as e:
            assert want in e.message(), e.message()
    wrong = http.InferInput("features", [1, 17], "FP64")
    wrong.set_data_from_numpy(X[:1].astype(np.float64))
    try:
        c.infer(MODEL, [wrong])
        raise AssertionError("FP64 accepted")
    except InferenceServerException as e:
        assert "must be FP32" in e.message(), e.message()
    print("ok tritonclient.http errors")


def triton_grpc():
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    c = grpc.InferenceServerClient(url=GRPC)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert not c.is_model_ready("nope")
    meta = c.get_model_metadata(MODEL)
    assert meta.inputs[0].name == "features" and list(meta.inputs[0].shape) == [-1, 17], meta
    assert c.get_server_metadata().name == "tally"
    inp = grpc.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    r = c.infer(MODEL, [inp], outputs=[grpc.InferRequestedOutput("label"), grpc.InferRequestedOutput("probabilities")],
                request_id="g-1", parameters={"priority_hint": 1.5})
    assert r.get_response().id == "g-1"
    check(r.as_numpy("label"), r.as_numpy("probabilities"), "tritonclient.grpc")
    r = c.infer(MODEL, [inp], outputs=[grpc.InferRequestedOutput("probabilities")])
    assert [o.name for o in r.get_response().outputs] == ["probabilities"]
    try:
        c.infer("nope", [inp])
        raise AssertionError("unknown model answered")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.NOT_FOUND", e.status()
    bad = grpc.InferInput("features", [2, 17], "FP64")
    bad.set_data_from_numpy(X[:2].astype(np.float64))
    try:
        c.infer(MODEL, [bad])
        raise AssertionError("a short tensor answered")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
    print("ok tritonclient.grpc errors")


def kserve_rest():
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def main():
        c = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        base = f"http://{REST}"
        assert await c.is_server_live(base) and await c.is_server_ready(base)
        assert await c.is_model_ready(base, MODEL)
        for binary in (False, True):
            inp = InferInput("features", list(X.shape), "FP32")
            inp.set_data_from_numpy(X, binary_data=binary)
            r = await c.infer(base, InferRequest(model_name=MODEL, infer_inputs=[inp], request_id="k-1"), model_name=MODEL)
            out = {o.name: o.as_numpy() for o in r.outputs}
            check(out["label"], out["probabilities"], f"kserve REST binary={binary}")
        try:
            await c.infer(base, InferRequest(model_name="nope", infer_inputs=[inp]), model_name="nope")
            raise AssertionError("unknown model answered")
        except Exception as e:  # the SDK raises httpx.HTTPStatusError with our message
            assert "not in the repository" in str(e), str(e)
        await c.close()
        print("ok kserve REST errors")

    asyncio.run(main())


def kserve_grpc():
    from kserve import InferInput, InferRequest
    from kserve.inference_client import InferenceGRPCClient

    async def main():
        c = InferenceGRPCClient(url=GRPC, timeout=30)
        assert await c.is_server_live() and await c.is_server_ready()
        assert await c.is_model_ready(MODEL)
        inp = InferInput("features", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        r = await c.infer(InferRequest(model_name=MODEL, infer_inputs=[inp], request_id="kg-1"))
        out = {o.name: o.as_numpy() for o in r.outputs}
        check(out["label"], out["probabilities"], "kserve gRPC")
        # Typed contents instead of raw bytes.
        inp = InferInput("features", list(X.shape), "FP32", data=X.flatten().tolist())
        r = await c.infer(InferRequest(model_name=MODEL, infer_inputs=[inp]))
        out = {o.name: o.as_numpy() for o in r.outputs}
        check(out["label"], out["probabilities"], "kserve gRPC typed contents")
        await c.close()

    asyncio.run(main())


{"triton-http": triton_http, "triton-grpc": triton_grpc, "kserve-rest": kserve_rest, "kserve-grpc": kserve_grpc}[CLIENT]()
