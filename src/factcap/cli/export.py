"""``factcap export``: a thin layer over :mod:`factcap.curation.export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_image_root, add_overwrite, check_image_root

EXAMPLES = """examples:
  factcap export kept.jsonl --to coco -o captions.json        # then: evaluate --references
  factcap export kept.jsonl --to llava -o train.json --images copy --prompt "Describe the photo."
  factcap export kept.jsonl --to hf -o dataset --style detailed --style short
  factcap export kept.jsonl --to folder -o lora --style short --prefix "ohwx, " --images link
  factcap export out.parquet --to csv -o captions.csv --status ok,error
  factcap export regions.jsonl --to gbc -o graphs.jsonl               # from caption --regions

formats (-o):
  coco    a .json file: images + annotations (one per style); file_name = the image's name,
          as factcap evaluate --references matches it
  llava   a .json file: [{id, image, conversations: [human "<image>\\nPROMPT", gpt caption]}],
          one entry per image and style
  hf      a folder: datasets.Dataset.save_to_disk with an Image column (bytes embedded), id,
          source, status and one column per style; load_from_disk reads it, and
          factcap caption reads it back
  folder  a folder: each image with a .txt caption beside it (one style), for LoRA trainers
  csv     a .csv file: id, file_name, source, status, one column per style
  gbc     a .jsonl file: one graph-based-captioning (Apple GBC) graph per image, from the
          caption graph of caption --regions (vertices image/entity/composition/relation
          with normalised bbox, descs, in/out edges); a record without one: its image vertex

images: --images copy|link puts them (copies, or symbolic links to the found files) in the
output folder (folder) or in <stem>_images/ beside the output file (coco, llava, csv,
gbc); none (the default for the file formats) refers to them where they are. hf always embeds them.
Images are found like factcap evaluate finds them (--image-root, then where the captioning
ran, then beside RESULTS); a record whose image is needed (copy, link, hf) but not found, or
whose file does not decode as an image, is left out and counted.
3D assets: their rendered views (saved by caption --save-views DIR) are exported, one image
entry per view (id <id>-view-<k>) with the asset's captions; an asset without saved views is
left out and counted. The mesh file itself is never exported.

Default styles: every style of the chosen records (folder: the first); default statuses: ok.
--prefix goes before every caption as given (e.g. a LoRA trigger word "ohwx, ")."""


def add_parser(sub: Any) -> None:
    """Register ``export`` on the top-level subparsers."""
    from factcap.curation.export import DEFAULT_PROMPT, EXPORTERS, IMAGE_MODES

    exp = sub.add_parser(
        "export",
        help="write records as training data: COCO, LLaVA, HF dataset, image folder, CSV, GBC",
        description="Export the captions of factcap's output (JSONL, Parquet or WebDataset) "
        "in the layouts other tools read.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    exp.add_argument(
        "results", type=Path, metavar="RESULTS", help="factcap caption output (.jsonl or folder)"
    )
    exp.add_argument("--to", required=True, choices=tuple(EXPORTERS), help="the format")
    exp.add_argument("-o", "--output", required=True, type=Path, help="file or folder to write")
    exp.add_argument(
        "--style",
        action="append",
        metavar="STYLE",
        help="caption style to export; repeatable or comma-separated (default: every style)",
    )
    exp.add_argument(
        "--status", default="ok", help="records of these statuses, comma-separated (default: ok)"
    )
    exp.add_argument(
        "--images", choices=IMAGE_MODES, help="copy, link or leave the images (default: see below)"
    )
    exp.add_argument(
        "--prompt",
        default=DEFAULT_PROMPT,
        help=f"llava: the human turn (default: {DEFAULT_PROMPT!r})",
    )
    exp.add_argument("--prefix", default="", help="text put before every caption, as given")
    add_image_root(exp)
    add_overwrite(exp)
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(handler=run)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()] or None


def run(args: argparse.Namespace) -> int:
    """The handler: check, export while streaming, say what was written."""
    from tqdm import tqdm

    from factcap.curation.export import ExportJob

    check_image_root(args)
    job = ExportJob(
        args.results,
        args.to,
        args.output,
        styles=_split(args.style),
        statuses=_split([args.status]) or [],
        images=args.images,
        prompt=args.prompt,
        prefix=args.prefix,
        image_root=args.image_root,
        overwrite=args.overwrite,
    )
    with tqdm(unit="rec", disable=args.quiet, desc="exporting", dynamic_ncols=True) as bar:
        stats = job.run(bar.update)
    print(f"factcap: {stats.summary()}", file=sys.stderr)
    if stats.no_image:
        print(
            f"factcap: warning: {stats.no_image} records were left out: their image file was "
            "not found (--image-root names the folder relative paths start from)",
            file=sys.stderr,
        )
    if stats.not_media:
        print(
            f"factcap: warning: {stats.not_media} records were left out: the file they name "
            f"is not an image factcap decodes, so it was not copied (e.g. "
            f"{stats.not_media_example})",
            file=sys.stderr,
        )
    if stats.no_views:
        print(
            f"factcap: warning: {stats.no_views} 3D assets were left out: their rendered "
            "views were not saved (caption them with --save-views DIR to export the views)",
            file=sys.stderr,
        )
    if stats.exported == 0:
        print("factcap: warning: nothing was exported", file=sys.stderr)
    return 1 if stats.no_image or stats.exported == 0 else 0
