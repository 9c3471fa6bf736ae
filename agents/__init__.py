"""The stops of the demo bus: busdriver -> (Quota ->) AddEmail -> WhiteList -> Log, and the pusher."""
