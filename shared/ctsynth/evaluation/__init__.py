"""Evaluation jobs: a request becomes a plan (`plan`), the plan's synthetic
draws and real splits (`sets`) are shared by its metrics (`run`,
`catalog`, `compute`), and the results become a report (`report`,
`figures`) and the model's headline (`job`). The metrics themselves are in
`ctsynth.metrics`; nothing here imports gRPC.
"""
