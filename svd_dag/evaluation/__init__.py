"""Evaluation metrics: FVD (I3D features), Elo / Bradley-Terry from pairwise votes, multi-view PSNR/SSIM."""
