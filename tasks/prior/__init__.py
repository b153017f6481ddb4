"""The IDT prior: PCA, GMM, Fisher vectors, count sketch, k-means and the clustering stage."""
