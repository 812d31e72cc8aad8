"""The diffusion backbone of Stages 2 and 3: SD-1.5 shaped UNets (with the hooks the animator uses), VAE, noise
schedule, DDIM and the progressive-CFG sampler."""
