"""Stages 2 and 3: SD-1.5 shaped UNets, VAE, DDIM and the portrait animator."""
