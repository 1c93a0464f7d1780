#!/bin/sh
# One KRaft node (broker + controller) of the StatefulSet `kafka`: its id is the pod's ordinal,
# its settings the ConfigMap's server.properties plus what only the pod knows.
set -euf  # -f: the classpath's /opt/kafka/libs/* is for java, not the shell
id="${HOSTNAME##*-}"
props=/tmp/server.properties
cp /etc/kafka/server.properties "$props"
cat >>"$props" <<PROPS
node.id=$id
advertised.listeners=PLAINTEXT://$HOSTNAME.$KAFKA_SERVICE.$POD_NAMESPACE.svc.cluster.local:9092
PROPS
java="java -Xms256m -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -Djava.awt.headless=true -Dlog4j2.configurationFile=/opt/kafka/log4j2.yaml -cp /opt/kafka/libs/*"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  echo "formatting /var/lib/kafka/data for cluster $KAFKA_CLUSTER_ID, node $id"
  $java kafka.tools.StorageTool format --cluster-id "$KAFKA_CLUSTER_ID" --config "$props"
fi
exec $java kafka.Kafka "$props"
