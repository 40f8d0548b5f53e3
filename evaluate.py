"""Score VSS predictions with mIoU, WIoU, mBIoU, mVC8 and mVC16.

    python evaluate.py test --config configs/evaluate/vspw.yaml \
        --data.root /data/VSPW_480p --data.pred_root /preds/cffm_b0/result_submission
"""

from vssam2.cli import cli_main

if __name__ == "__main__":
    cli_main()
