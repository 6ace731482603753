// The official Java client (kafka-clients) against a broker: admin, producer, assign()-consumer.
//
// Usage: java -cp 'CLASSES:LIBS/*' HeadwaterJavaClient BOOTSTRAP TOPIC COUNT
//        java -cp 'CLASSES:LIBS/*' HeadwaterJavaClient group BOOTSTRAP TOPIC GROUP COUNT
//
// Creates TOPIC with 3 partitions (an existing topic is fine), produces COUNT keyed records with
// a header (acks=all, no idempotence, lz4), reads them back with assign() + seekToBeginning (no
// group, no commits), and prints one line per observation, space-separated:
//   P partition offset key                    an acknowledged record (RecordMetadata)
//   C partition offset key value header       a consumed record
//   B partition offset                        beginningOffsets
//   E partition offset                        endOffsets
//   T partition offset timestamp              offsetsForTimes(base + COUNT / 2); offset -1 = none
//   DONE
// Record i has key "key-i", value "value-i", header h="hv-i" and timestamp base + i, where base is
// an hour ago rounded down to the second.
//
// The group mode consumes an existing TOPIC as a member of consumer group GROUP: subscribe
// (classic protocol, earliest, no auto-commit), poll until COUNT records, commitSync(), then
// read back the committed offsets of its assignment, printing:
//   C partition offset value                  a consumed record
//   K partition offset                        committed(assignment); offset -1 = none
//   DONE
// Exits 0 on success, 1 on any error.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class HeadwaterJavaClient {
    private static final int PARTITIONS = 3;
    private static final long POLL_DEADLINE_MS = 60_000;

    private HeadwaterJavaClient() {}

    public static void main(String[] args) {
        int code;
        try {
            if (args.length == 5 && args[0].equals("group")) {
                groupConsume(args[1], args[2], args[3], Integer.parseInt(args[4]));
            } else if (args.length == 3) {
                run(args[0], args[1], Integer.parseInt(args[2]));
            } else {
                throw new IllegalArgumentException("usage: HeadwaterJavaClient BOOTSTRAP TOPIC COUNT"
                        + " | group BOOTSTRAP TOPIC GROUP COUNT");
            }
            code = 0;
        } catch (Throwable error) {
            System.out.flush();
            System.err.println("HeadwaterJavaClient failed: " + error);
            error.printStackTrace(System.err);
            code = 1;
        }
        System.out.flush();
        System.err.flush();
        System.exit(code); // do not wait on any lingering client threads
    }

    private static void run(String bootstrap, String topic, int count) throws Exception {
        long base = (System.currentTimeMillis() / 1000 - 3600) * 1000;
        createTopic(bootstrap, topic);
        produce(bootstrap, topic, count, base);
        consume(bootstrap, topic, count, base);
        System.out.println("DONE");
    }

    private static void createTopic(String bootstrap, String topic) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "headwater-java-admin");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        try (Admin admin = Admin.create(props)) {
            NewTopic newTopic = new NewTopic(topic, PARTITIONS, (short) 1);
            try {
                admin.createTopics(Collections.singletonList(newTopic)).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException error) {
                if (!(error.getCause() instanceof TopicExistsException)) {
                    throw error;
                }
            }
        }
    }

    private static void produce(String bootstrap, String topic, int count, long base) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, "headwater-java-producer");
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        List<Future<RecordMetadata>> futures = new ArrayList<>(count);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                RecordHeaders headers = new RecordHeaders();
                headers.add("h", ("hv-" + i).getBytes(StandardCharsets.UTF_8));
                futures.add(producer.send(
                        new ProducerRecord<>(topic, null, base + i, "key-" + i, "value-" + i, headers)));
            }
            producer.flush();
            for (int i = 0; i < count; i++) {
                RecordMetadata meta = futures.get(i).get(60, TimeUnit.SECONDS);
                if (!meta.hasOffset()) {
                    throw new IllegalStateException("record " + i + " acknowledged without an offset");
                }
                System.out.println("P " + meta.partition() + " " + meta.offset() + " key-" + i);
            }
        }
    }

    private static void consume(String bootstrap, String topic, int count, long base) throws Exception {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "headwater-java-consumer");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo info : infos) {
                partitions.add(new TopicPartition(info.topic(), info.partition()));
            }
            partitions.sort(Comparator.comparingInt(TopicPartition::partition));
            if (partitions.size() != PARTITIONS) {
                throw new IllegalStateException("expected " + PARTITIONS + " partitions, got " + partitions);
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);

            int read = 0;
            long deadline = System.currentTimeMillis() + POLL_DEADLINE_MS;
            while (read < count) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("read " + read + " of " + count + " records in "
                            + POLL_DEADLINE_MS + " ms");
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> record : records) {
                    Header header = record.headers().lastHeader("h");
                    String headerValue = header == null || header.value() == null
                            ? "-" : new String(header.value(), StandardCharsets.UTF_8);
                    System.out.println("C " + record.partition() + " " + record.offset() + " "
                            + record.key() + " " + record.value() + " " + headerValue);
                    read++;
                }
            }

            Map<TopicPartition, Long> beginning = consumer.beginningOffsets(partitions);
            Map<TopicPartition, Long> end = consumer.endOffsets(partitions);
            Map<TopicPartition, Long> query = new HashMap<>();
            long target = base + count / 2;
            for (TopicPartition tp : partitions) {
                query.put(tp, target);
            }
            Map<TopicPartition, OffsetAndTimestamp> byTime = consumer.offsetsForTimes(query);
            for (TopicPartition tp : partitions) {
                System.out.println("B " + tp.partition() + " " + beginning.get(tp));
            }
            for (TopicPartition tp : partitions) {
                System.out.println("E " + tp.partition() + " " + end.get(tp));
            }
            for (TopicPartition tp : partitions) {
                OffsetAndTimestamp found = byTime.get(tp);
                if (found == null) {
                    System.out.println("T " + tp.partition() + " -1 -1");
                } else {
                    System.out.println("T " + tp.partition() + " " + found.offset() + " "
                            + (found.timestamp() - base));
                }
            }
        }
    }

    private static void groupConsume(String bootstrap, String topic, String group, int count) throws Exception {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "headwater-java-group-consumer");
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        props.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "50");
        props.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(Collections.singletonList(topic));
            int read = 0;
            long deadline = System.currentTimeMillis() + POLL_DEADLINE_MS;
            while (read < count) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("read " + read + " of " + count + " records in "
                            + POLL_DEADLINE_MS + " ms");
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> record : records) {
                    System.out.println("C " + record.partition() + " " + record.offset() + " "
                            + record.value());
                    read++;
                }
            }
            consumer.commitSync(Duration.ofSeconds(30));
            Set<TopicPartition> assigned = new TreeSet<>(Comparator.comparingInt(TopicPartition::partition));
            assigned.addAll(consumer.assignment());
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned);
            for (TopicPartition tp : assigned) {
                OffsetAndMetadata found = committed.get(tp);
                System.out.println("K " + tp.partition() + " " + (found == null ? -1 : found.offset()));
            }
        }
        System.out.println("DONE");
    }
}
