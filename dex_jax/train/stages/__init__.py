"""The stages the shared loop trains, each a module with make_stage(config) and check_config(config) (stage1,
expression), and the Stage-1 helpers they share (motion_pairs: batches as flat pairs; warm_start: params
taken from trained runs; pretrained: params imported from the user's pretrained files)."""
