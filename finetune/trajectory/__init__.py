"""Next-visit disease prediction (sequential trajectories) from coded history and notes."""
