"""Measures of how good and how useful a synthetic CT set is (seed 002:
fidelity is not utility, so measure both).

Each module is one family of measures over arrays of images shaped
(N, C, *spatial) with values in [0, 1], and knows nothing about jobs or gRPC:

- `checks`: the input errors every metric raises (`MetricError`);
- `frechet`: feature statistics and the Fréchet distance (FID);
- `feature_metrics`: FID, KID and precision/recall on feature arrays
  (KID and PR are torch-fidelity's own);
- `feature_cache`: real-set features cached in the object store;
- `weights`: feature-extractor weights from a path or an object-store URI;
- `inception`, `domain_extractor`, `med3d`, `planes`: feature spaces
  (InceptionV3, a CT network trained here, a Med3D 3D ResNet, 2.5D slices);
- `nearest`: nearest neighbours by L2 distance;
- `ssim`: MS-SSIM to the L2-nearest real volume and among synthetic pairs;
- `variety`: lossless-JPEG size of the mean image;
- `memorization`: nearest-training-sample distances;
- `networks`, `utility`: the downstream tumor classifier and its utility test;
- `efficiency`: memory and time to generate, training cost.
"""
