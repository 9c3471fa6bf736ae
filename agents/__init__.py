"""The stops of the demo bus: busdriver -> AddEmail -> WhiteList -> Log, and the pusher."""
