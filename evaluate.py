"""Score VSS predictions with mIoU, WIoU, mBIoU, mVC8 and mVC16.

    python evaluate.py test --config configs/evaluate/vspw.yaml \
        --data.root /data/VSPW_480p --data.pred_root /preds/cffm_b0/result_submission
"""

from callbacks import default_callbacks
from vssam2.cli import VSSCLI, cli_main


def main(args: list[str] | None = None) -> VSSCLI:
    """Runs the evaluation CLI on ``args`` (``sys.argv`` by default)."""
    return cli_main(args=args, callbacks=default_callbacks())


if __name__ == "__main__":
    main()
