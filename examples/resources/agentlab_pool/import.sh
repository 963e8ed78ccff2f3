# A pool is imported by its profile name.
terraform import agentlab_pool.ephemeral yolo-ephemeral
