"""The datasets: binarized images (MNIST, FashionMNIST, Omniglot) found, verified, cached, split and batched
on the device (images)."""
