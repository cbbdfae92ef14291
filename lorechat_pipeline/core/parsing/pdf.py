"""PDF text layer -> unstructured elements: unstructured's strategy "fast", without its image stack.

`unstructured.partition.pdf` imports OpenCV, pdf2image and unstructured-inference's ONNX layout
models at module import, even for "fast", which only reads the text layer with pdfminer. We do
not install that stack (torchvision breaks sentence-transformers; the models come from a hub), so
this module runs the same pdfminer pass (unstructured's page generator, which repairs broken
dictionaries with pikepdf, and its fake-bold de-duplication) and the same element classifier.
"""

import io
from dataclasses import dataclass
from typing import Any

from lorechat_pipeline.core.parsing.errors import DocumentRejected
from lorechat_pipeline.core.parsing.offline_nlp import batched_nlp, install_offline_nlp

# unstructured's default: characters drawn twice within 2 pt are one character ("fake bold").
CHAR_DUPLICATE_THRESHOLD = 2.0


@dataclass(frozen=True)
class _TextBox:
    text: str
    page_number: int
    points: tuple[tuple[float, float], ...]  # top-left origin, as unstructured expects
    system: Any  # the page's PixelSpace


def partition_pdf_text(data: bytes, filename: str) -> list[Any]:
    """Elements of the PDF's text layer with page numbers. Raises DocumentRejected."""
    install_offline_nlp()
    from unstructured.partition.text import element_from_text

    boxes, pages = _text_boxes(data)
    if pages == 0:
        raise DocumentRejected("corrupt", "pdfminer: the PDF has no readable pages")
    if not boxes:
        raise DocumentRejected(
            "no_text", f"{pages} page(s) without a text layer (scanned?); OCR is not available"
        )
    elements = []
    with batched_nlp([box.text for box in boxes]):
        for box in boxes:
            element = element_from_text(
                box.text, coordinates=box.points, coordinate_system=box.system
            )
            element.metadata.page_number = box.page_number
            element.metadata.filename = filename
            elements.append(element)
    return elements


def _text_boxes(data: bytes) -> tuple[list[_TextBox], int]:
    from pdfminer.layout import LTTextContainer
    from pdfminer.pdfdocument import PDFEncryptionError
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.documents.coordinates import PixelSpace
    from unstructured.partition.pdf_image.pdfminer_utils import (
        get_text_with_deduplication,
        open_pdfminer_pages_generator,
    )

    boxes = []
    pages = 0
    try:
        for page_number, (_, layout) in enumerate(
            open_pdfminer_pages_generator(io.BytesIO(data)), start=1
        ):
            pages = page_number
            height = layout.height
            system = PixelSpace(width=layout.width, height=height)
            for box in layout:
                if not isinstance(box, LTTextContainer):
                    continue
                text = clean_extra_whitespace(
                    get_text_with_deduplication(box, CHAR_DUPLICATE_THRESHOLD)
                )
                if text:
                    x1, y1, x2, y2 = box.x0, height - box.y1, box.x1, height - box.y0
                    points = ((x1, y1), (x1, y2), (x2, y2), (x2, y1))
                    boxes.append(_TextBox(text, page_number, points, system))
    except PDFEncryptionError as error:
        raise DocumentRejected("encrypted", f"pdfminer: {type(error).__name__}: {error}") from error
    return boxes, pages
