"""Small real documents, built in memory, for the parsing tests."""

import io
import struct
import wave
import zipfile

MARKDOWN = """# Installation Guide

The installer copies the lighthouse keeper's files into the archive folder and checks them.

## Configuration

Set the harbour name and the tide tables before the first voyage; the defaults are for Brest.
"""

HTML = """<!DOCTYPE html>
<html><head><title>Harbour notes</title></head>
<body>
<h1>Tide Tables</h1>
<p>High water at the northern pier arrives forty minutes after the southern pier.</p>
<h2>Moorings</h2>
<p>Visiting boats moor on the pontoon beside the fish market, never at the ferry ramp.</p>
</body></html>
"""

TEXT = """Lighthouse Maintenance

The lamp is cleaned every Tuesday morning by the keeper on duty.
Spare bulbs are stored in the oak cabinet on the second landing.
"""

CSV = "harbour,boats,depth\nBrest,120,14.5\nLorient,85,9.0\nConcarneau,40,6.5\n"

JSON = (
    '[{"vessel": "Marie-Louise", "home_port": "Douarnenez", "length_m": 18},'
    ' {"vessel": "Saint-Guénolé", "home_port": "Concarneau", "length_m": 22}]'
)

XML = """<?xml version="1.0" encoding="UTF-8"?>
<harbours>
  <harbour><name>Brest</name><note>Deep water naval harbour with a long breakwater.</note></harbour>
  <harbour><name>Roscoff</name><note>Ferry port facing the English Channel.</note></harbour>
</harbours>
"""

EMAIL = """From: Harbour Master <master@example.org>
To: Crew <crew@example.org>
Subject: Storm warning for Friday
Date: Mon, 3 Mar 2025 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

All boats must be secured with double lines before Friday evening because of the storm.
The fuel dock closes at noon on Friday.
"""

PGP_EMAIL = """From: A <a@example.org>
To: B <b@example.org>
Subject: Secret plans
MIME-Version: 1.0
Content-Type: multipart/encrypted; boundary=foo; protocol="application/pgp-encrypted"

--foo
Content-Type: application/pgp-encrypted

Version: 1

--foo
Content-Type: application/octet-stream

-----BEGIN PGP MESSAGE-----

hIwDY32hYGCE8MkBA/wOu7d45aUxF4Q0RKJprD3v5Z9K1YcRJ2fve87lMlDlx4Oj
-----END PGP MESSAGE-----

--foo--
"""

RST = """Ship Registry
=============

Every fishing vessel is listed with its registration number and home port.

Inspections
-----------

Hulls are inspected every two years in the dry dock at Lorient.
"""


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Safety Procedures", level=1)
    document.add_paragraph("Life jackets are stored under every bench of the passenger deck.")
    document.add_heading("Fire Drills", level=1)
    document.add_paragraph("The crew rehearses the fire drill on the first Monday of each month.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx() -> bytes:
    from pptx import Presentation

    presentation = Presentation()
    for title, body in (
        ("Fleet Overview", "Twelve trawlers and four ferries operate from the harbour."),
        ("Crew Training", "New deckhands complete sea survival training in their first week."),
    ):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx() -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    first = workbook.active
    first.title = "Catches"
    first.append(["species", "tonnes"])
    first.append(["mackerel", 42])
    first.append(["sardine", 17])
    second = workbook.create_sheet("Prices")
    second.append(["species", "euro_per_kg"])
    second.append(["lobster", 38])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with a real text layer (Helvetica), one paragraph per string, 60 pt apart."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",  # the page tree, once the kids are known
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    kids = []
    for paragraphs in pages:
        blocks = [
            f"BT /F1 {18 if i == 0 else 11} Tf 72 {720 - 60 * i} Td ({escape(text)}) Tj ET"
            for i, text in enumerate(paragraphs)
        ]
        stream = "\n".join(blocks)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects) + 2} 0 R >>"
        )
        kids.append(len(objects))
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    )

    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


TWO_PAGE_PDF_PAGES = [
    [
        "Annual Harbour Report",
        "The harbour handled more cargo this year than in any year since the war.",
    ],
    [
        "Dredging Works",
        "The main channel was dredged to a depth of twelve metres during the winter.",
    ],
]


def encrypted_pdf(plain: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(plain)))
    writer.encrypt(user_password="s3cret", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def encrypted_ooxml(plain: bytes) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    buffer = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt("s3cret", buffer)
    return buffer.getvalue()


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"".join(struct.pack("<h", i % 500) for i in range(8000)))
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "A text file inside an archive.")
    return buffer.getvalue()
