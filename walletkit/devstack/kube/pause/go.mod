// The pod sandbox's process (what registry.k8s.io/pause is elsewhere), built here because no image
// registry can be reached: it holds the pod's namespaces open and reaps orphans until it is told to stop.
module walletcontrolplane/pause

go 1.26.0
