"""Contract tests of image and document blocks: answers naming each attachment, media tokens, limits.

Test media are made here (tests/media_builders.py): no fixture files. In a batch a refused block is an
`errored` result with `invalid_request_error` (not billed); synchronously it is an HTTP 400.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math

import anthropic
import pytest

from emulator_contract import announce_oversized, check_body, lines_by_id, raw_results, retrieve_ended
from media_builders import jpeg_bytes, pdf_bytes, png_bytes

MODEL = "claude-haiku-4-5"
PROMPT = "Extract the fields."


def tok(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


def sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pdf_block(data: bytes, **extra) -> dict:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
            **extra}


def image_block(data: bytes, media_type: str = "image/png", **extra) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}, **extra}


def params(*blocks, text: str = PROMPT, **extra) -> dict:
    return {"model": MODEL, "max_tokens": 200,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}, *blocks]}], **extra}


def run_batch(api, reqs) -> tuple[str, dict]:
    batch = api.messages.batches.create(requests=reqs)
    retrieve_ended(api, batch.id)
    return batch.id, lines_by_id(raw_results(api, batch.id))


def answer(result: dict) -> str:
    assert result["type"] == "succeeded", result
    return result["message"]["content"][0]["text"]


def digest(text: str = PROMPT) -> str:
    return "digest:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def pdf_text(pages: int, text: str) -> str:
    return "\n".join(f"{text} page {k}/{pages}" for k in range(1, pages + 1))


def test_each_answer_names_its_own_pdfs_in_order(api):
    a, b = pdf_bytes(3, "loan A"), pdf_bytes(5, "loan B")
    _, results = run_batch(api, [
        {"custom_id": "ab", "params": params(pdf_block(a), pdf_block(b))},
        {"custom_id": "ba", "params": params(pdf_block(b), pdf_block(a))},
        {"custom_id": "a", "params": params(pdf_block(a))},
    ])
    assert answer(results["ab"]) == f"{digest()} | pdf:3p:{sha12(a)} pdf:5p:{sha12(b)}"
    assert answer(results["ba"]) == f"{digest()} | pdf:5p:{sha12(b)} pdf:3p:{sha12(a)}"
    assert answer(results["a"]) == f"{digest()} | pdf:3p:{sha12(a)}"
    usage = results["a"]["message"]["usage"]
    assert usage["input_tokens"] == 4 + tok(PROMPT) + 1500 * 3 + tok(pdf_text(3, "loan A"))
    sync = api.messages.create(**params(pdf_block(a), pdf_block(b)))
    assert sync.content[0].text == answer(results["ab"])
    assert sync.usage.input_tokens == results["ab"]["message"]["usage"]["input_tokens"]
    counted = api.messages.count_tokens(model=MODEL, messages=params(pdf_block(a), pdf_block(b))["messages"])
    assert counted.input_tokens == sync.usage.input_tokens


def test_the_text_of_compressed_pdfs_is_read_too(api):
    plain, packed = pdf_bytes(2, "net 30 days"), pdf_bytes(2, "net 30 days", compressed=True)
    counts = [api.messages.count_tokens(model=MODEL, messages=params(pdf_block(data))["messages"]).input_tokens
              for data in (plain, packed)]
    assert counts == [4 + tok(PROMPT) + 1500 * 2 + tok(pdf_text(2, "net 30 days"))] * 2
    msg = api.messages.create(**params(pdf_block(packed), text="Labels: net 30, net 60\nTerms?"))
    assert msg.content[0].text == f"net 30 | pdf:2p:{sha12(packed)}"


def test_images_are_named_by_size_and_hash_and_cost_by_pixels(api):
    small, wide, photo = png_bytes(1000, 500), png_bytes(3000, 1500, (1, 2, 3)), jpeg_bytes(640, 480)
    msg = api.messages.create(**params(image_block(small), image_block(wide), image_block(photo, "image/jpeg")))
    assert msg.content[0].text == (f"{digest()} | image:1000x500:{sha12(small)} "
                                   f"image:3000x1500:{sha12(wide)} image:640x480:{sha12(photo)}")
    # 1000*500/750 -> 667; 3000x1500 scaled to 1568x784 -> 1640; 640*480/750 -> 410
    assert msg.usage.input_tokens == 4 + tok(PROMPT) + 667 + 1640 + 410


def test_image_headers_of_every_type_are_read(api):
    gif = b"GIF89a" + (321).to_bytes(2, "little") + (123).to_bytes(2, "little") + b"\x00" * 8
    webp_lossy = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 10 + (77).to_bytes(2, "little") + (66).to_bytes(2, "little")
    webp_ext = b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8 + (999).to_bytes(3, "little") + (499).to_bytes(3, "little")
    msg = api.messages.create(**params(image_block(gif, "image/gif"), image_block(webp_lossy, "image/webp"),
                                       image_block(webp_ext, "image/webp")))
    assert msg.content[0].text.split(" | ")[1] == (
        f"image:321x123:{sha12(gif)} image:77x66:{sha12(webp_lossy)} image:1000x500:{sha12(webp_ext)}")


def test_text_documents_url_sources_titles_and_structured_output(api):
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                          "data": "Claim 42 filed by Ada Lovelace about a broken window"},
           "title": "claim", "context": "insurance", "citations": {"enabled": True}}
    url_pdf = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    url_img = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    msg = api.messages.create(**params(doc, url_pdf, url_img))
    assert msg.content[0].text == (f"{digest()} | text:Claim_42_filed_by_Ada "
                                   f"document:url:{sha12(b'https://example.com/a.pdf')} "
                                   f"image:url:{sha12(b'https://example.com/a.png')}")
    assert msg.usage.input_tokens == (4 + tok(PROMPT) + tok(doc["source"]["data"]) + tok("claim") + tok("insurance")
                                      + 1500 + 1600)
    schema = {"type": "object", "additionalProperties": False, "required": ["kind", "summary"],
              "properties": {"kind": {"type": "string", "enum": ["invoice", "claim", "other"]},
                             "summary": {"type": "string"}}}
    pdf = pdf_bytes(2, "an invoice for 3 chairs")
    out = api.messages.create(**params(pdf_block(pdf), text="Labels: claim, invoice, other\nWhat is it?",
                                       output_config={"format": {"type": "json_schema", "schema": schema}}))
    value = json.loads(out.content[0].text)
    assert value["kind"] == "invoice"  # the label named in the PDF's text
    assert value["summary"] == f"invoice | pdf:2p:{sha12(pdf)}"


def test_oversized_images_are_downsized_by_default_and_refused_on_request(api):
    huge = png_bytes(9000, 100)
    msg = api.messages.create(**params(image_block(huge)))
    assert msg.content[0].text == f"{digest()} | image:8000x88:{sha12(huge)}"
    assert msg.usage.input_tokens == 4 + tok(PROMPT) + math.ceil(1568 * 17 / 750)
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(**params(image_block(huge, transformations={"oversized_image": "error"})))
    assert err.value.body["error"] == {"type": "invalid_request_error", "message": (
        "messages.0.content.1.image.source.base64.data: At least one of the image dimensions exceed max allowed "
        "size: 8000 pixels (the image is 9000x100; the largest that fits is 8000x88)")}
    many = [image_block(png_bytes(10, 10 + i)) for i in range(20)]
    wide = png_bytes(2500, 100)
    fine = api.messages.create(**params(*many, image_block(wide)))
    assert fine.content[0].text.endswith(f" image:2000x80:{sha12(wide)}")
    assert api.messages.create(**params(*many[:19], image_block(wide))).content[0].text.endswith(
        f" image:2500x100:{sha12(wide)}")  # 20 images: the 8000 px limit
    with pytest.raises(anthropic.BadRequestError) as err:
        api.messages.create(**params(*many, image_block(wide, transformations={"oversized_image": "error"})))
    assert err.value.body["error"]["message"] == (
        "messages.0.content.21.image.source.base64.data: At least one of the image dimensions exceed max allowed "
        "size for many-image requests: 2000 pixels (the image is 2500x100; the largest that fits is 2000x80)")


def _refusals() -> dict[str, tuple[dict, str]]:
    png = png_bytes(20, 20)
    big = png_bytes(20, 20, pad_to=3_932_200)  # 5,242,936 bytes of base64
    at = "messages.0.content.1"
    return {
        "bad_base64": ({**params(), "messages": [{"role": "user", "content": [
            {"type": "text", "text": PROMPT},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not*base64"}}]}]},
            f"{at}.image.source.base64: invalid base64 data"),
        "png_said_jpeg": (params(image_block(png, "image/jpeg")),
                          f"{at}.image.source.base64.data: Image does not match the provided media type image/jpeg"),
        "pdf_said_png": (params(image_block(pdf_bytes(1), "image/png")),
                         f"{at}.image.source.base64.data: Image does not match the provided media type image/png"),
        "png_said_pdf": (params(pdf_block(png)), f"{at}.pdf.source.base64.data: The PDF specified was not valid."),
        "bmp_type": (params(image_block(png, "image/bmp")), f"{at}.image.source.base64.media_type: Input should be "
                     "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
        "encrypted_pdf": (params(pdf_block(pdf_bytes(2, "secret", encrypted=True))),
                          f"{at}.pdf.source.base64.data: The PDF specified is encrypted (password protected); "
                          "only unencrypted PDFs are supported."),
        "pdf_101_pages": (params(pdf_block(pdf_bytes(101))),
                          f"{at}.pdf.source.base64.data: A maximum of 100 PDF pages may be provided."),
        "pages_and_images": (params(pdf_block(pdf_bytes(99)), image_block(png), image_block(png)),
                             "Too much media: 99 document pages + 2 images > 100"),
        "image_over_5mb": (params(image_block(big)),
                           f"{at}.image.source.base64: image exceeds 5 MB maximum: 5242936 bytes > 5242880 bytes"),
        "101_images": (params(*[image_block(png)] * 101), "Too much media: 0 document pages + 101 images > 100"),
        "http_url": (params({"type": "image", "source": {"type": "url", "url": "http://example.com/a.png"}}),
                     f"{at}.image.source.url.url: Only https URLs are supported: http://example.com/a.png"),
        "unknown_source": (params({"type": "document", "source": {"type": "zip", "data": "x"}}),
                           f"{at}.document.source: Input tag 'zip' found using 'type' does not match any of the "
                           "expected tags: 'base64', 'content', 'file', 'text', 'url'"),
        "extra_key": (params(image_block(png, detail="high")), f"{at}.image.detail: Extra inputs are not permitted"),
        "bad_transformation": (params(image_block(png, transformations={"oversized_image": "crop"})),
                               f"{at}.image.transformations.oversized_image: Input should be 'downsize' or 'error'"),
        "unknown_file": (params({"type": "document", "source": {"type": "file", "file_id": "file_nope"}}),
                         f"{at}.document.source.file.file_id: File not found: file_nope"),
    }


REFUSALS = _refusals()


def test_refused_media_come_back_errored_and_are_not_billed(api, emulator):
    reqs = [{"custom_id": "ok", "params": params(pdf_block(pdf_bytes(1)))}]
    reqs += [{"custom_id": cid, "params": body} for cid, (body, _) in REFUSALS.items()]
    batch_id, results = run_batch(api, reqs)
    assert results["ok"]["type"] == "succeeded"
    for cid, (_, message) in REFUSALS.items():
        assert results[cid]["type"] == "errored", cid
        assert results[cid]["error"]["error"] == {"type": "invalid_request_error", "message": message}, cid
    assert list(emulator.ledger()["bill"]["by_batch"]) == [batch_id]
    assert emulator.ledger()["bill"]["tokens"]["input_tokens"] == results["ok"]["message"]["usage"]["input_tokens"]


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_media_are_an_http_400_synchronously(api, emulator, case):
    body, message = REFUSALS[case]
    for call in (api.messages.create, lambda **kw: api.messages.count_tokens(
            **{k: v for k, v in kw.items() if k != "max_tokens"})):
        with pytest.raises(anthropic.BadRequestError) as err:
            call(**body)
        assert err.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert emulator.ledger()["bill"]["total_usd"] == 0


def test_a_batch_request_over_32_mb_is_refused(api):
    text = "word " * (6_800_000)  # 34 MB of text document
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    _, results = run_batch(api, [{"custom_id": "big", "params": params(doc)}])
    assert results["big"]["error"]["error"]["message"].startswith(
        "request exceeds the maximum size of a Messages request with media")


def test_a_synchronous_body_over_32_mb_is_413_without_being_read(emulator):
    head, body = announce_oversized(emulator, "/v1/messages", 32 * 1024 * 1024, b'{"model": ')
    assert head.startswith(b"HTTP/1.1 413")
    assert check_body("POST", "/v1/messages", 413, body) == []
    assert json.loads(body)["error"]["type"] == "request_too_large"
