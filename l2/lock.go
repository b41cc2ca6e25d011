package l2

// lockName is the file in a store's directory that lockDir locks (on
// systems with flock); Reset and the tests leave it in place.
const lockName = "modelcache.lock"
