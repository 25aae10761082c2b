"""Training-dynamics laboratories: XOR-cluster grokking, NTK permutation ensembles, abc-parametrisations (muP)."""
