"""Evaluation: the paper's metrics (PSNR, SSIM, LPIPS, L1, CSIM, AED, APD) as CLU metrics and their face tools."""
